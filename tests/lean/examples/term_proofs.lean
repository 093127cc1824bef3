prelude
import SubgoalFixture
-- Term-mode proofs only. Expected: no warnings/errors; one info `'t' does not depend on any axioms`.

theorem t (p q : Prop) (hp : p) (hq : q) : And p q := And.intro hp hq
theorem t_anon (p q : Prop) (hp : p) (hq : q) : And p q := ⟨hp, hq⟩
theorem t_fun (p q : Prop) : And p q → And q p := fun h => ⟨h.right, h.left⟩
theorem t_iff (p q : Prop) : Iff (And p q) (And q p) := ⟨fun h => ⟨h.2, h.1⟩, fun h => ⟨h.2, h.1⟩⟩
theorem t_or (p q : Prop) (h : Or p q) : Or q p := Or.elim h (fun hp => Or.inr hp) (fun hq => Or.inl hq)
theorem t_false (p : Prop) (h : False) : p := False.elim h
theorem t_absurd (p q : Prop) (hp : p) (hn : Not p) : q := absurd hp hn
theorem t_eq (a b c : Nat) (h₁ : Eq a b) (h₂ : Eq b c) : Eq c a := Eq.symm (Eq.trans h₁ h₂)
theorem t_nat : Eq (Nat.add 2 3) 5 := rfl
#print axioms t
