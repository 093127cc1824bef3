-- Root module of the proving project. subgoal's documents need not exist on disk; this file only
-- makes `lake build` prove that Mathlib imports.
import Mathlib
