prelude
import SubgoalFixture
-- The standard axioms. Expected infos:
--   'std_propext' depends on axioms: [propext]
--   'std_choice' depends on axioms: [Classical.choice]
--   'std_funext' depends on axioms: [Quot.sound]
--   'std_all' depends on axioms: [propext, Classical.choice, Quot.sound]

theorem std_propext (p : Prop) (hp : p) : Eq p True := propext ⟨fun _ => True.intro, fun _ => hp⟩
theorem std_choice (α : Type) (a : α) : Eq (Classical.choice ⟨a⟩) (Classical.choice ⟨a⟩) := rfl
theorem std_funext (f g : Nat → Nat) (h : (x : Nat) → Eq (f x) (g x)) : Eq f g := funext h
theorem std_all (p : Prop) (hp : p) (α : Type) (a : α) : And (Eq p True) (Eq (Classical.choice ⟨a⟩) (Classical.choice ⟨a⟩)) :=
  ⟨std_propext p hp, have _h := std_funext id id (fun _ => rfl); std_choice α a⟩
#print axioms std_propext
#print axioms std_choice
#print axioms std_funext
#print axioms std_all
