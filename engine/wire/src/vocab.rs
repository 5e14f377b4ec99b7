//! The vocabulary every layer shares: the errors a client sees (class, description, and the
//! stage that produced them, which JSON-RPC 2.0 reports as a code), the argument and result
//! shapes of commands that take or return nothing, the greeting's version, events, and the
//! dialect a listener speaks. Plain data; nothing here knows a socket or a thread.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The protocol a listener (and every connection it accepts) speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// QEMU's QMP (docs/protocol.md#qmp-dialect).
    Qmp,
    /// OVS-style JSON-RPC 1.0, and 2.0 for requests that say so.
    JsonRpc,
}

/// QMP error classes (JSON-RPC maps them onto its own codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// Any failure that is not one of the specific classes.
    GenericError,
    /// The command does not exist (or not in this session state).
    CommandNotFound,
}

impl ErrorClass {
    /// The class as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::GenericError => "GenericError",
            ErrorClass::CommandNotFound => "CommandNotFound",
        }
    }
}

/// A command's failure, sent to the client as an error reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandError {
    /// The error class.
    pub class: ErrorClass,
    /// Human-readable description.
    pub desc: String,
    /// Which stage failed: QMP does not say, JSON-RPC 2.0 has a code for each.
    origin: Origin,
}

/// The stage that produced an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    Handler,
    Arguments,
    Request,
    Parse,
}

impl CommandError {
    fn new(class: ErrorClass, desc: impl Into<String>, origin: Origin) -> Self {
        CommandError { class, desc: desc.into(), origin }
    }

    /// A `GenericError` with this description.
    pub fn generic(desc: impl Into<String>) -> Self {
        Self::new(ErrorClass::GenericError, desc, Origin::Handler)
    }

    /// A `CommandNotFound` with this description.
    pub fn not_found(desc: impl Into<String>) -> Self {
        Self::new(ErrorClass::CommandNotFound, desc, Origin::Handler)
    }

    /// Arguments that do not decode into the command's type.
    pub fn invalid_arguments(desc: impl Into<String>) -> Self {
        Self::new(ErrorClass::GenericError, desc, Origin::Arguments)
    }

    /// A well-formed message that is not a valid request.
    pub fn invalid_request(desc: impl Into<String>) -> Self {
        Self::new(ErrorClass::GenericError, desc, Origin::Request)
    }

    /// Input that is not a parsable JSON value (or breaks a limit).
    pub fn parse(desc: impl Into<String>) -> Self {
        Self::new(ErrorClass::GenericError, desc, Origin::Parse)
    }

    /// The JSON-RPC 2.0 error code.
    pub fn rpc_code(&self) -> i32 {
        match self.origin {
            Origin::Parse => -32700,
            Origin::Request => -32600,
            Origin::Arguments => -32602,
            Origin::Handler if self.class == ErrorClass::CommandNotFound => -32601,
            Origin::Handler => -32000,
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class.as_str(), self.desc)
    }
}

/// Arguments of a command that takes none: accepts a missing or empty `arguments` object
/// and rejects any member.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// The empty object `{}`, for commands with nothing to return.
#[derive(Clone, Copy, Debug, Default, Serialize, JsonSchema)]
pub struct Empty {}

/// The greeting's `version` object (kept in QEMU's shape because clients parse it).
#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct VersionInfo {
    /// `{"micro": .., "minor": .., "major": ..}`.
    pub qemu: VersionTriple,
    /// Free text naming the implementation.
    pub package: String,
}

/// A `major.minor.micro` version.
#[derive(Clone, Copy, Debug, Serialize, JsonSchema)]
pub struct VersionTriple {
    /// Micro.
    pub micro: u32,
    /// Minor.
    pub minor: u32,
    /// Major.
    pub major: u32,
}

/// An event to broadcast; encoded by each parser thread, never by the executor.
#[derive(Debug)]
pub struct Event {
    /// The event name (`SHUTDOWN`, ...).
    pub name: String,
    /// Its `data` member, if any.
    pub data: Option<serde_json::Value>,
    /// When it happened (QMP's `timestamp`).
    pub at: std::time::SystemTime,
}

impl Event {
    /// An event happening now.
    pub fn now(name: String, data: Option<serde_json::Value>) -> Event {
        Event { name, data, at: std::time::SystemTime::now() }
    }
}
