prelude
import SubgoalFixture
-- Expected: warning "declaration uses `sorry`" (at `s`), then info "'s' depends on axioms: [sorryAx]".

theorem s (p : Prop) : p := sorry
#print axioms s
