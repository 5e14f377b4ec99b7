//! The QMP dialect (docs/protocol.md#qmp-dialect): session modes, request classification in QEMU's
//! order of checks, and the encoding of greetings, replies and events.

mod classify;
mod encode;

pub(crate) use classify::{CapabilitiesArgs, Mode, Target, classify};
pub(crate) use encode::{begin_return, end_reply, error, event, greeting};

/// The negotiation command, handled by the session itself rather than the registry.
pub(crate) const CAPABILITIES: &str = "qmp_capabilities";
