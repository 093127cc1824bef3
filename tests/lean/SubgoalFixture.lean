prelude
/-!
# SubgoalFixture

A tiny stand-in for Lean's `Init`, for the verifier's integration tests.  The test toolchain has
no `Init.olean`, so every test file starts with `prelude` and `import SubgoalFixture`.

Build once:
  lean -o .toolchain/lib/lean/SubgoalFixture.olean tests/lean/SubgoalFixture.lean
-/

universe u v w

/-! ## Compiler markers: the code generator refers to these by name. -/
unsafe axiom lcErased : Type
unsafe axiom lcAny : Type
unsafe axiom lcVoid : Type

/-! ## Basic types the elaborator builds terms with (`PUnit` in matchers, `Eq` in `inductive`'s
auxiliary constructions, `HEq` in `noConfusion`). -/
set_option bootstrap.inductiveCheckResultingUniverse false in
inductive PUnit : Sort u where
  | unit : PUnit

-- Both sides are indices, exactly as in core: the elaborator relies on this shape.
inductive Eq : α → α → Prop where
  | refl (a : α) : Eq a a

@[reducible] def Eq.ndrec.{u1, u2} {α : Sort u2} {a : α} {motive : α → Sort u1}
    (m : motive a) {b : α} (h : Eq a b) : motive b :=
  Eq.rec (motive := fun x _ => motive x) m h

inductive HEq : {α : Sort u} → α → {β : Sort u} → β → Prop where
  | refl (a : α) : HEq a a

inductive Bool : Type where
  | false : Bool
  | true : Bool

export Bool (false true)

def id {α : Sort u} (a : α) : α := a

def cond {α : Sort u} (c : Bool) (x y : α) : α := Bool.casesOn c y x

def Function.const {α : Sort u} (β : Sort v) (a : α) : β → α := fun _ => a

abbrev Unit : Type := PUnit
abbrev Unit.unit : Unit := PUnit.unit

unsafe axiom lcProof {α : Prop} : α
unsafe axiom lcCast {α : Sort u} {β : Sort v} (a : α) : β
unsafe axiom lcUnreachable {α : Sort u} : α

/-! ## Propositional logic. -/
inductive True : Prop where
  | intro : True

inductive False : Prop

inductive Empty : Type

def Not (a : Prop) : Prop := a → False

def False.elim {C : Sort u} (h : False) : C := h.rec

def absurd {a : Prop} {b : Sort v} (h₁ : a) (h₂ : Not a) : b := (h₂ h₁).rec

set_option linter.defProp false in
def rfl {α : Sort u} {a : α} : Eq a a := Eq.refl a

theorem Eq.subst {α : Sort u} {motive : α → Prop} {a b : α} (h₁ : Eq a b) (h₂ : motive a) :
    motive b :=
  Eq.ndrec h₂ h₁

theorem Eq.symm {α : Sort u} {a b : α} (h : Eq a b) : Eq b a :=
  Eq.ndrec (motive := fun x => Eq x a) rfl h

theorem Eq.trans {α : Sort u} {a b c : α} (h₁ : Eq a b) (h₂ : Eq b c) : Eq a c :=
  Eq.ndrec (motive := fun x => Eq a x) h₁ h₂

theorem congrArg {α : Sort u} {β : Sort v} {a₁ a₂ : α} (f : α → β) (h : Eq a₁ a₂) :
    Eq (f a₁) (f a₂) :=
  Eq.ndrec (motive := fun x => Eq (f a₁) (f x)) rfl h

def cast {α β : Sort u} (h : Eq α β) (a : α) : β := Eq.rec (motive := fun x _ => x) a h

theorem eq_of_heq {α : Sort u} {a a' : α} (h : HEq a a') : Eq a a' :=
  have : (α β : Sort u) → (a : α) → (b : β) → HEq a b → (h : Eq α β) → Eq (cast h a) b :=
    fun α _ a _ h₁ =>
      h₁.rec (motive := fun {β} (b : β) _ => (h₂ : Eq α β) → Eq (cast h₂ a) b)
        (fun (_ : Eq α α) => rfl)
  this α α a a' h rfl

theorem heq_of_eq {α : Sort u} {a a' : α} (h : Eq a a') : HEq a a' :=
  Eq.ndrec (motive := fun x => HEq a x) (HEq.refl a) h

inductive And (a b : Prop) : Prop where
  | intro (left : a) (right : b) : And a b

theorem And.left {a b : Prop} (h : And a b) : a := h.rec (fun l _ => l)
theorem And.right {a b : Prop} (h : And a b) : b := h.rec (fun _ r => r)

inductive Or (a b : Prop) : Prop where
  | inl (h : a) : Or a b
  | inr (h : b) : Or a b

theorem Or.elim {a b c : Prop} (h : Or a b) (left : a → c) (right : b → c) : c :=
  h.rec left right

inductive Iff (a b : Prop) : Prop where
  | intro (mp : a → b) (mpr : b → a) : Iff a b

theorem Iff.mp {a b : Prop} (h : Iff a b) : a → b := h.rec (fun mp _ => mp)
theorem Iff.mpr {a b : Prop} (h : Iff a b) : b → a := h.rec (fun _ mpr => mpr)

/-! ## Products and lifts (used by `inductive`'s `below`/`brecOn`/`noConfusion` and `structure`). -/
structure PProd (α : Sort u) (β : Sort v) where
  fst : α
  snd : β

structure PULift.{r, s} (α : Sort s) : Sort (max s r 1) where
  up ::
  down : α

/-! ## Decidability (needed for `Nat.decEq`). -/
class inductive Decidable (p : Prop) where
  | isFalse (h : Not p) : Decidable p
  | isTrue (h : p) : Decidable p

def dite {α : Sort u} (c : Prop) [h : Decidable c] (t : c → α) (e : Not c → α) : α :=
  Decidable.casesOn (motive := fun _ => α) h e t

def ite {α : Sort u} (c : Prop) [h : Decidable c] (t e : α) : α :=
  Decidable.casesOn (motive := fun _ => α) h (fun _ => e) (fun _ => t)

theorem Bool.false_ne_true (h : Eq false true) : False :=
  @Eq.ndrec Bool false (fun b => Bool.rec (motive := fun _ => Prop) True False b) True.intro true h


/-! ## Natural numbers: the kernel accelerates arithmetic on literals by these names. -/
set_option genCtorIdx false in
inductive Nat : Type where
  | zero : Nat
  | succ (n : Nat) : Nat

/- Every operation below is accelerated by the kernel on literals (GMP); the definitions give
the same results on unary numerals.  Written with recursors, so they are `noncomputable`. -/
/- `OfNat`: numerals `0`, `1`, … elaborate to `OfNat.ofNat Nat n (instOfNatNat n)`; the `sorry`
label (a `Lean.Name` literal) contains such numerals too. -/
class OfNat (α : Type u) (_ : Nat) where
  ofNat : α

@[default_instance 100]
instance instOfNatNat (n : Nat) : OfNat Nat n where
  ofNat := n

noncomputable def Nat.beq (n : Nat) : Nat → Bool :=
  Nat.rec (motive := fun _ => Nat → Bool)
    (fun m => Nat.rec (motive := fun _ => Bool) true (fun _ _ => false) m)
    (fun _ ih m => Nat.rec (motive := fun _ => Bool) false (fun m' _ => ih m') m) n

theorem Nat.beq_refl (n : Nat) : Eq (Nat.beq n n) true :=
  Nat.rec (motive := fun n => Eq (Nat.beq n n) true) rfl (fun _ ih => ih) n

theorem Nat.eq_of_beq_eq_true {n m : Nat} (h : Eq (Nat.beq n m) true) : Eq n m :=
  Nat.rec (motive := fun n => (m : Nat) → Eq (Nat.beq n m) true → Eq n m)
    (fun m => Nat.rec (motive := fun m => Eq (Nat.beq Nat.zero m) true → Eq Nat.zero m)
      (fun _ => rfl) (fun _ _ h => False.elim (Bool.false_ne_true h)) m)
    (fun n ih m => Nat.rec (motive := fun m => Eq (Nat.beq (Nat.succ n) m) true → Eq (Nat.succ n) m)
      (fun h => False.elim (Bool.false_ne_true h))
      (fun m' _ h => congrArg Nat.succ (ih m' h)) m)
    n m h

theorem Nat.ne_of_beq_eq_false {n m : Nat} (h : Eq (Nat.beq n m) false) : Not (Eq n m) :=
  fun e => Bool.false_ne_true (Eq.trans
    (Eq.symm (Eq.ndrec (motive := fun x => Eq (Nat.beq n x) false) h (Eq.symm e)))
    (Nat.beq_refl n))

noncomputable def Nat.ble (n : Nat) : Nat → Bool :=
  Nat.rec (motive := fun _ => Nat → Bool)
    (fun _ => true)
    (fun _ ih m => Nat.rec (motive := fun _ => Bool) false (fun m' _ => ih m') m) n

noncomputable def Nat.pred (n : Nat) : Nat := Nat.rec (motive := fun _ => Nat) Nat.zero (fun m _ => m) n

noncomputable def Nat.add (n m : Nat) : Nat :=
  Nat.rec (motive := fun _ => Nat) n (fun _ ih => Nat.succ ih) m

noncomputable def Nat.sub (n m : Nat) : Nat :=
  Nat.rec (motive := fun _ => Nat) n (fun _ ih => Nat.pred ih) m

noncomputable def Nat.mul (n m : Nat) : Nat :=
  Nat.rec (motive := fun _ => Nat) Nat.zero (fun _ ih => Nat.add ih n) m

noncomputable def Nat.pow (n m : Nat) : Nat :=
  Nat.rec (motive := fun _ => Nat) (Nat.succ Nat.zero) (fun _ ih => Nat.mul ih n) m

-- `n % m` (and `n % 0 = n`, as in core): subtract `m` while it fits, at most `n` times.
noncomputable def Nat.modCore (fuel n m : Nat) : Nat :=
  Nat.rec (motive := fun _ => Nat → Nat) (fun n => n)
    (fun _ ih n => cond (Nat.ble m n) (ih (Nat.sub n m)) n) fuel n

noncomputable def Nat.mod (n m : Nat) : Nat := cond (Nat.beq m Nat.zero) n (Nat.modCore n n m)

noncomputable def Nat.decEq (n m : Nat) : Decidable (Eq n m) :=
  Bool.rec (motive := fun b => Eq (Nat.beq n m) b → Decidable (Eq n m))
    (fun h => Decidable.isFalse (Nat.ne_of_beq_eq_false h))
    (fun h => Decidable.isTrue (Nat.eq_of_beq_eq_true h))
    (Nat.beq n m) rfl

/-! ## `sorry`: `sorryAx` plus what a labeled sorry (`Lean.Meta.mkLabeledSorry`) is built from. -/
axiom sorryAx (α : Sort u) (synthetic : Bool) : α

inductive List (α : Type u) where
  | nil : List α
  | cons (head : α) (tail : List α) : List α

-- The kernel unfolds a string literal to `String.ofList [Char.ofNat c, …]`.
inductive Char : Type where
  | ofNat (n : Nat) : Char

inductive String : Type where
  | ofList (data : List Char) : String

inductive Lean.Name : Type where
  | anonymous : Lean.Name
  | str (pre : Lean.Name) (s : String) : Lean.Name
  | num (pre : Lean.Name) (i : Nat) : Lean.Name

/-! ## A proof that takes (practically) forever, for wall-clock timeout tests.

`Nat.mul`/`Nat.mod`/`Nat.add` on literals run in GMP both in the elaborator (`Meta.reduceNat?`)
and in the kernel, so the work below allocates little and is NOT stopped by `maxHeartbeats`
(default 200000) or the recursion limits.  `Slow.spin n 0` evaluates `2^n` leaves, each a
`Nat.mod` of a 26-million-bit number (`Slow.big = 3^(2^24)`); about 3 ms per leaf, memory flat
(~160 MB).  Candidate text (never finishes; `Slow.spin 12 0` takes ~12 s, each +1 doubles):

  theorem slow : Eq (Nat.beq (Slow.spin 40 0) 0) false := rfl
-/
namespace Slow

/-- `x ^ (2 ^ k)` by repeated squaring. -/
noncomputable def sqIter (k x : Nat) : Nat :=
  Nat.rec (motive := fun _ => Nat) x (fun _ ih => Nat.mul ih ih) k

noncomputable def big : Nat := sqIter 24 3

/-- A binary tree of depth `n` whose leaves are distinct (so no cache shares work). -/
noncomputable def spin (n x : Nat) : Nat :=
  Nat.rec (motive := fun _ => Nat → Nat)
    (fun x => Nat.mod big (Nat.add x 2))
    (fun _ ih x => Nat.add (ih (Nat.mul x 2)) (ih (Nat.succ (Nat.mul x 2))))
    n x

end Slow
