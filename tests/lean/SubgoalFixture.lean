prelude
/-!
# SubgoalFixture: a tiny stand-in for Lean's `Init`, for the verifier's integration tests

The test toolchain (`.toolchain/bin/lean`, Lean 4.35.0) ships no `Init.olean`, so every test file
starts with `prelude` and `import SubgoalFixture`.  Build once (about 0.2 s):

    mkdir -p .toolchain/lib/lean
    .toolchain/bin/lean -o .toolchain/lib/lean/SubgoalFixture.olean tests/lean/SubgoalFixture.lean

Supported in client files: term-mode proofs (`fun`, `⟨_, _⟩`, `h.1`, `have x : T := e; b`,
`show T from e`, `match`, numerals), `sorry`, `axiom`, `#print axioms`, `#check`, `structure`,
`inductive`, `def` with simple structural recursion.  Tactic proofs (`by tac`, or `by` and an
indented block on the next lines, tactics separated by newlines or `;`) with the tactics `exact`,
`apply`, `refine` (`?_` goals; term `sorry` in holes), `constructor`, `assumption`, `intro x y …`,
`first | tac | …`, and the builtin `set_option NAME VAL in tac` and `open NS in tac`.
NOT supported: other tactics ("unknown tactic": `trivial`, `rfl`, `simp`, `decide`, … are macros
or syntax from `Init`), tactics spelled with a keyword (`have`, `show`, `sorry`, `·`, `(…)`:
"unexpected token"), `<;>`, `intro` with patterns (`intro ⟨a, b⟩` expands to the macro `try`),
notation (`∧`, `=`, `¬`, `▸`; `→` is fine), `notation`/`macro` commands, `#eval`, `nat_lit`,
well-founded or course-of-values recursion (`wfParam` missing), `*.inj` injectivity lemmas.

Names and shapes follow core Lean where the elaborator or the kernel looks them up by name.
Everything here is proved, except the axioms core also has (`propext`, `Classical.choice`,
`Quot.sound`, `sorryAx`) and the compiler's `unsafe` markers.
-/

universe u v w

/-! ## Compiler markers: the code generator refers to these by name. -/
unsafe axiom lcErased : Type
unsafe axiom lcAny : Type
unsafe axiom lcVoid : Type

/-! ## Types the elaborator itself builds terms with
(`PUnit` in matchers, `Eq`/`HEq`/`cond` in the auxiliary constructions of `inductive`). -/
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

def Function.const {α : Sort u} (β : Sort v) (a : α) : β → α := fun _ => a

def cond {α : Sort u} (c : Bool) (x y : α) : α := Bool.casesOn c y x

abbrev Unit : Type := PUnit
abbrev Unit.unit : Unit := PUnit.unit

unsafe axiom lcProof {α : Prop} : α
unsafe axiom lcCast {α : Sort u} {β : Sort v} (a : α) : β
unsafe axiom lcUnreachable {α : Sort u} : α

/-! ## Propositional logic and equality. -/
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

theorem congrFun {α : Sort u} {β : α → Sort v} {f g : (x : α) → β x} (h : Eq f g) (a : α) :
    Eq (f a) (g a) :=
  @Eq.ndrec ((x : α) → β x) f (fun k => Eq (f a) (k a)) rfl g h

def cast {α β : Sort u} (h : Eq α β) (a : α) : β := Eq.rec (motive := fun x _ => x) a h

-- `structure` needs these two (kernel-checked projections and `noConfusion`).
theorem eq_of_heq {α : Sort u} {a a' : α} (h : HEq a a') : Eq a a' :=
  have : (α β : Sort u) → (a : α) → (b : β) → HEq a b → (h : Eq α β) → Eq (cast h a) b :=
    fun α _ a _ h₁ =>
      h₁.rec (motive := fun {β} (b : β) _ => (h₂ : Eq α β) → Eq (cast h₂ a) b)
        (fun (_ : Eq α α) => rfl)
  this α α a a' h rfl

theorem heq_of_eq {α : Sort u} {a a' : α} (h : Eq a a') : HEq a a' :=
  Eq.ndrec (motive := fun x => HEq a x) (HEq.refl a) h

/-! ## Quotients: `init_quot` makes the kernel add `Quot`, `Quot.mk`, `Quot.lift`, `Quot.ind`. -/
init_quot

axiom Quot.sound : ∀ {α : Sort u} {r : α → α → Prop} {a b : α}, r a b →
  Eq (Quot.mk r a) (Quot.mk r b)

theorem funext {α : Sort u} {β : α → Sort v} {f g : (x : α) → β x}
    (h : (x : α) → Eq (f x) (g x)) : Eq f g :=
  let eqv (f g : (x : α) → β x) : Prop := (x : α) → Eq (f x) (g x)
  let app (q : Quot eqv) (x : α) : β x :=
    Quot.lift (fun (f : (x : α) → β x) => f x) (fun _ _ h => h x) q
  congrArg app (Quot.sound h)

/-! ## Products and lifts (`inductive`'s `below`/`brecOn`/`ctorElim` use them; `below`/`brecOn`,
hence structural recursion in client `def`s, are only generated once `Prod` exists). -/
structure PProd (α : Sort u) (β : Sort v) where
  fst : α
  snd : β

structure Prod (α : Type u) (β : Type v) where
  mk ::
  fst : α
  snd : β

structure PULift.{r, s} (α : Sort s) : Sort (max s r 1) where
  up ::
  down : α

/-! ## Connectives, as in core (`And`/`Iff` are structures: `h.1`, `h.left`, `⟨a, b⟩`). -/
structure And (a b : Prop) : Prop where
  intro ::
  left : a
  right : b

inductive Or (a b : Prop) : Prop where
  | inl (h : a) : Or a b
  | inr (h : b) : Or a b

theorem Or.elim {a b c : Prop} (h : Or a b) (left : a → c) (right : b → c) : c :=
  h.rec left right

structure Iff (a b : Prop) : Prop where
  intro ::
  mp : a → b
  mpr : b → a

/-! ## Decidability: the auxiliary constructions of `inductive` use `dite` and `Nat.decEq`. -/
class inductive Decidable (p : Prop) where
  | isFalse (h : Not p) : Decidable p
  | isTrue (h : p) : Decidable p

def dite {α : Sort u} (c : Prop) [h : Decidable c] (t : c → α) (e : Not c → α) : α :=
  Decidable.casesOn (motive := fun _ => α) h e t

def ite {α : Sort u} (c : Prop) [h : Decidable c] (t e : α) : α :=
  Decidable.casesOn (motive := fun _ => α) h (fun _ => e) (fun _ => t)

theorem Bool.false_ne_true (h : Eq false true) : False :=
  @Eq.ndrec Bool false (fun b => Bool.rec (motive := fun _ => Prop) True False b) True.intro true h

/-! ## Natural numbers.
The kernel and `Meta.reduceNat?` compute `Nat.add/sub/mul/pow/mod/beq/ble` on literals with GMP,
by name; the definitions below agree with those results (so the fixture stays sound).  They are
written with recursors, which the code generator cannot compile, so they carry core's `@[extern]`
names instead (client `def`s that `match` on `Nat` need `Nat.sub`/`Nat.decEq` to be compilable).
`genCtorIdx false`: `Nat.ctorIdx` would need the `Nat` operations declared below. -/
set_option genCtorIdx false in
inductive Nat : Type where
  | zero : Nat
  | succ (n : Nat) : Nat

-- Numerals `0`, `1`, … elaborate to `OfNat.ofNat Nat n (instOfNatNat n)`; so does the `Nat`
-- inside a labeled `sorry`.
class OfNat (α : Type u) (_ : Nat) where
  ofNat : α

@[default_instance 100]
instance instOfNatNat (n : Nat) : OfNat Nat n where
  ofNat := n

@[extern "lean_nat_pred"] def Nat.pred (n : Nat) : Nat := Nat.rec (motive := fun _ => Nat) Nat.zero (fun m _ => m) n

@[extern "lean_nat_add"] def Nat.add (n m : Nat) : Nat :=
  Nat.rec (motive := fun _ => Nat) n (fun _ ih => Nat.succ ih) m

@[extern "lean_nat_sub"] def Nat.sub (n m : Nat) : Nat :=
  Nat.rec (motive := fun _ => Nat) n (fun _ ih => Nat.pred ih) m

@[extern "lean_nat_mul"] def Nat.mul (n m : Nat) : Nat :=
  Nat.rec (motive := fun _ => Nat) Nat.zero (fun _ ih => Nat.add ih n) m

@[extern "lean_nat_pow"] def Nat.pow (n m : Nat) : Nat :=
  Nat.rec (motive := fun _ => Nat) (Nat.succ Nat.zero) (fun _ ih => Nat.mul ih n) m

@[extern "lean_nat_dec_eq"] def Nat.beq (n : Nat) : Nat → Bool :=
  Nat.rec (motive := fun _ => Nat → Bool)
    (fun m => Nat.rec (motive := fun _ => Bool) true (fun _ _ => false) m)
    (fun _ ih m => Nat.rec (motive := fun _ => Bool) false (fun m' _ => ih m') m) n

@[extern "lean_nat_dec_le"] def Nat.ble (n : Nat) : Nat → Bool :=
  Nat.rec (motive := fun _ => Nat → Bool)
    (fun _ => true)
    (fun _ ih m => Nat.rec (motive := fun _ => Bool) false (fun m' _ => ih m') m) n

-- `n % m`, with `n % 0 = n` as in core: subtract `m` while it fits, at most `n` times.
noncomputable def Nat.modCore (fuel n m : Nat) : Nat :=
  Nat.rec (motive := fun _ => Nat → Nat) (fun n => n)
    (fun _ ih n => cond (Nat.ble m n) (ih (Nat.sub n m)) n) fuel n

@[extern "lean_nat_mod"] def Nat.mod (n m : Nat) : Nat := cond (Nat.beq m Nat.zero) n (Nat.modCore n n m)

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

@[extern "lean_nat_dec_eq"] def Nat.decEq (n m : Nat) : Decidable (Eq n m) :=
  Bool.rec (motive := fun b => Eq (Nat.beq n m) b → Decidable (Eq n m))
    (fun h => Decidable.isFalse (Nat.ne_of_beq_eq_false h))
    (fun h => Decidable.isTrue (Nat.eq_of_beq_eq_true h))
    (Nat.beq n m) rfl

/-! ## `sorry`
`sorry` elaborates (via `Lean.Meta.mkLabeledSorry`) to `sorryAx (Lean.Name → P) false tag`, where
`tag` is a `Lean.Name` literal built from `Lean.Name.anonymous/str/num`, string and `Nat`
literals.  Without these, `sorry` fails with `internal exception #3`. -/
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

-- Name-quoting helpers (`ToExpr Name` uses `mkStrN` for names made of strings only).
@[reducible] def Lean.Name.mkStr (p : Lean.Name) (s : String) : Lean.Name := Lean.Name.str p s
@[reducible] def Lean.Name.mkNum (p : Lean.Name) (n : Nat) : Lean.Name := Lean.Name.num p n
@[reducible] def Lean.Name.mkStr1 (s₁ : String) : Lean.Name := .str .anonymous s₁
@[reducible] def Lean.Name.mkStr2 (s₁ s₂ : String) : Lean.Name := .str (.str .anonymous s₁) s₂
@[reducible] def Lean.Name.mkStr3 (s₁ s₂ s₃ : String) : Lean.Name :=
  .str (.str (.str .anonymous s₁) s₂) s₃
@[reducible] def Lean.Name.mkStr4 (s₁ s₂ s₃ s₄ : String) : Lean.Name :=
  .str (.str (.str (.str .anonymous s₁) s₂) s₃) s₄

/-! ## The other standard axioms, so tests can check which axioms a verifier accepts. -/
axiom propext {a b : Prop} : Iff a b → Eq a b

class inductive Nonempty (α : Sort u) : Prop where
  | intro (val : α) : Nonempty α

axiom Classical.choice {α : Sort u} : Nonempty α → α

/-! ## A proof that takes (practically) forever, for wall-clock timeout tests
`Nat.mul`/`Nat.mod`/`Nat.add` on literals run in GMP, in the elaborator (`Meta.reduceNat?`) and
in the kernel alike, so the work allocates little and is NOT stopped by `maxHeartbeats` (default
200000) nor by a recursion limit.  `Slow.spin n 0` evaluates `2^n` distinct leaves, each a
`Nat.mod` of a 26-million-bit number (`Slow.big = 3^(2^24)`): about 3 ms per leaf, mostly in the
elaborator; memory starts near 160 MB and grows ~1.5 MB/s.  Candidate text (never finishes;
`Slow.spin 12 0` in its place takes about 12 s, each +1 doubles it):

    theorem slow : Eq (Nat.beq (Slow.spin 40 0) 0) false := rfl
-/
namespace Slow

/-- `x ^ (2 ^ k)` by repeated squaring. -/
noncomputable def sqIter (k x : Nat) : Nat :=
  Nat.rec (motive := fun _ => Nat) x (fun _ ih => Nat.mul ih ih) k

noncomputable def big : Nat := sqIter 24 3

/-- A binary tree of depth `n` with distinct leaves, so no cache shares work between them. -/
noncomputable def spin (n x : Nat) : Nat :=
  Nat.rec (motive := fun _ => Nat → Nat)
    (fun x => Nat.mod big (Nat.add x 2))
    (fun _ ih x => Nat.add (ih (Nat.mul x 2)) (ih (Nat.succ (Nat.mul x 2))))
    n x

end Slow

/-! ## Tactics
Tactic *elaborators* are compiled into Lean; only their *syntax* lives in `Init`.  `syntax`
elaborates to a `Lean.ParserDescr` (constructors, order and arguments as in core: the parser
compiler reads them by position; core's `unicodeSymbol` is left out, nothing here builds one), so
the tactics below are declared under the builtin kind names and `by …` runs the real elaborators.
Their leading words are non-reserved symbols, as in core: no new keywords (`exact`, `intro`,
`first`, `And.intro` stay usable as identifiers).  `set_option … in tac` needs nothing here: its
parser and elaborator are builtin. -/
namespace Lean

inductive ParserDescr where
  | const  (name : Name)
  | unary  (name : Name) (p : ParserDescr)
  | binary (name : Name) (p₁ p₂ : ParserDescr)
  | node (kind : Name) (prec : Nat) (p : ParserDescr)
  | trailingNode (kind : Name) (prec lhsPrec : Nat) (p : ParserDescr)
  | symbol (val : String)
  | nonReservedSymbol (val : String) (includeIdent : Bool)
  | cat (catName : Name) (rbp : Nat)
  | parser (declName : Name)
  | nodeWithAntiquot (name : String) (kind : Name) (p : ParserDescr)
  | sepBy  (p : ParserDescr) (sep : String) (psep : ParserDescr) (allowTrailingSep : Bool)
  | sepBy1 (p : ParserDescr) (sep : String) (psep : ParserDescr) (allowTrailingSep : Bool)

abbrev TrailingParserDescr := ParserDescr

end Lean

-- Same syntax as `Init/Tactics.lean`.
syntax (name := Lean.Parser.Tactic.exact) "exact " term : tactic
syntax (name := Lean.Parser.Tactic.apply) "apply " term : tactic
syntax (name := Lean.Parser.Tactic.refine) "refine " term : tactic
syntax (name := Lean.Parser.Tactic.constructor) "constructor" : tactic
syntax (name := Lean.Parser.Tactic.assumption) "assumption" : tactic

-- `intro x y …` (core: `"intro" notFollowedBy("|") (ppSpace colGt term:max)*`).  The DSL's `*` is
-- a macro from `Init`, so the descriptor is written out: `many (colGt term:max)`; `colGt` stops
-- it at the next line's tactic.  (`intro | pat => …` is builtin syntax of its own.)
open Lean in
@[tactic_parser] meta def Lean.Parser.Tactic.intro : ParserDescr :=
  ParserDescr.node `Lean.Parser.Tactic.intro 1022
    (ParserDescr.binary `andthen (ParserDescr.nonReservedSymbol "intro" false)
      (ParserDescr.unary `many
        (ParserDescr.binary `andthen (ParserDescr.const `colGt) (ParserDescr.cat `term 1024))))

-- `first | tac | …` (core: `"first " withPosition((colGe "| " tacticSeq)+)`), written out for
-- the same reason; the elaborator reads each alternative as a `group` of `|` and a `tacticSeq`.
open Lean in
@[tactic_parser] meta def Lean.Parser.Tactic.first : ParserDescr :=
  ParserDescr.node `Lean.Parser.Tactic.first 1022
    (ParserDescr.binary `andthen (ParserDescr.nonReservedSymbol "first " false)
      (ParserDescr.unary `withPosition (ParserDescr.unary `many1 (ParserDescr.unary `group
        (ParserDescr.binary `andthen (ParserDescr.const `colGe)
          (ParserDescr.binary `andthen (ParserDescr.symbol "| ") (ParserDescr.const `tacticSeq)))))))
