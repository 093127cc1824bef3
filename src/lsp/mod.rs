//! Language Server Protocol plumbing, independent of Lean: framing (`frame`) and JSON-RPC (`rpc`).
pub mod frame;
pub mod rpc;
