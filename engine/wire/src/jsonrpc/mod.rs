//! The JSON-RPC dialect (docs/protocol.md#json-rpc-dialect): Open vSwitch's JSON-RPC 1.0 as OVS
//! clients expect it, plus JSON-RPC 2.0 for requests that say `"jsonrpc": "2.0"`. Classification of
//! a parsed request, and the encoding of results and errors.

mod classify;
mod encode;

pub use classify::{ECHO, classify};
pub use encode::{begin_result, end_result, error};
