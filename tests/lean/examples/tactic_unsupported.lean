prelude
import SubgoalFixture
-- `trivial` is a macro of Init, which the fixture lacks. Expected: errors "unknown tactic" and "unsolved goals".

theorem tac (p : Prop) (hp : p) : p := by trivial
