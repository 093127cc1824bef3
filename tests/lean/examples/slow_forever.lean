prelude
import SubgoalFixture
-- Runs (practically) forever with default options, for wall-clock timeout tests.  No message is
-- ever printed; `maxHeartbeats` (default) does not stop it: the work is GMP arithmetic in the
-- elaborator (`Meta.reduceNat?`), with few allocations.  Measured: killed after 72 s, RSS
-- 130 MB -> 180 MB (~0.8 MB/s), one core with `-j1` (~2 cores without).  SIGTERM ends it.
-- Replace 40 by 12 for a run of about 12 s that then succeeds with no message.

theorem slow : Eq (Nat.beq (Slow.spin 40 0) 0) false := rfl
