//! Everything that knows Lean: its source text (`lexer`, `source`), where it is installed
//! (`discovery`), how a sandboxed Lean is started (`launch`), its server's messages (`protocol`) and one running server (`session`).
pub mod discovery;
pub mod launch;
pub mod lexer;
pub mod protocol;
pub mod session;
pub mod source;
