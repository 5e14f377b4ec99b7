//! The QMP dialect (docs/protocol.md#qmp-dialect): session modes, request classification in QEMU's
//! order of checks, and the encoding of greetings, replies and events.

mod classify;
mod encode;

pub use classify::{CapabilitiesArgs, Mode, Target, classify};
pub use encode::{begin_return, end_reply, error, event, greeting};

/// The negotiation command, handled by the session itself rather than the registry.
pub const CAPABILITIES: &str = "qmp_capabilities";
