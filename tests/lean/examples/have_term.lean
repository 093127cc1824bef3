prelude
import SubgoalFixture
-- Term-mode `have`. Expected: no messages at all.

theorem t2 (p q : Prop) (hp : p) (hq : q) : And q p :=
  have h1 : q := hq; have h2 : p := hp; And.intro h1 h2
