prelude
import SubgoalFixture
-- Expected: warning "declaration uses `sorry`" (at `s2`), then info "'s2' depends on axioms: [sorryAx]".

theorem s2 (p : Prop) : p :=
  have h : p := sorry; h
#print axioms s2
