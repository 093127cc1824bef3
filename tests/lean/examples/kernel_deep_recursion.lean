prelude
import SubgoalFixture
-- The elaborator accepts this (~0.6 s), the kernel then gives up. Expected: one error
-- "(kernel) deep recursion detected, use `set_option maxRecDepth <num>` to increase the limit".

noncomputable def loop (n : Nat) : Nat := Nat.rec (motive := fun _ => Nat) 0 (fun _ ih => ih) n
theorem deep : Eq (loop 100000) 0 := rfl
