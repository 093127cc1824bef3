prelude
import SubgoalFixture
-- Tactics are not available without Init. Expected: errors "unknown tactic" and "unsolved goals".

theorem tac (p : Prop) (hp : p) : p := by exact hp
