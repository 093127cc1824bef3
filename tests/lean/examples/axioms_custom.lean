prelude
import SubgoalFixture
-- Expected: info "'u' depends on axioms: [ax]".

axiom ax : False
theorem u : False := ax
#print axioms u
