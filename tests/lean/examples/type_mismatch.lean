prelude
import SubgoalFixture
-- Fails fast. Expected: error "Type mismatch ... True.intro ... has type True but is expected to have type False".

theorem bad : False := True.intro
