prelude
import SubgoalFixture
-- A non-BMP character (𝔽, U+1D53D: 4 bytes in UTF-8, 2 UTF-16 units) before an error on the same line.
-- Expected: one "Type mismatch" error on the last line. `lean --json` counts columns in code
-- points (pos 7:34, endPos 7:44); the LSP server counts UTF-16 units (0-based line 6, character 37..47).
theorem 𝔽ok (p : Prop) (hp : p) : p := hp
/- 𝔽 𝔽 -/ theorem 𝔽bad : False := True.intro
