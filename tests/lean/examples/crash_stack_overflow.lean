prelude
import SubgoalFixture
-- Crashes the process: after 8-14 s (on 2 cores; RSS reaches ~2.6 GB) lean prints
-- "Stack overflow detected. Aborting." to stderr and dies by SIGABRT (shell status 134),
-- with no JSON message on stdout.  Heavy: do not run it in every test.

noncomputable def loop (n : Nat) : Nat := Nat.rec (motive := fun _ => Nat) 0 (fun _ ih => ih) n
theorem crash : Eq (loop 100000000) 0 := rfl
