//! Reply addressing and encoding, dialect by dialect. A reply is written in the form of the
//! request that asked for it (QMP, OVS JSON-RPC 1.0, JSON-RPC 2.0) with that request's id
//! bytes, so an in-band reply that comes back later still knows both. Parser threads only.

use serde::Serialize;

use crate::vocab::CommandError;
use crate::{jsonrpc, qmp};

/// The wire form of a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// QMP: `{"return": ..., "id": ...}` or `{"error": ...}`, `\r\n`-terminated.
    Qmp,
    /// OVS JSON-RPC 1.0: `result` and `error` both present, one of them null.
    Rpc1,
    /// JSON-RPC 2.0.
    Rpc2,
}

/// An echoed request id: the compact raw bytes, inline when short (the common case: small
/// numbers and strings), so most in-band requests keep their id without allocating.
/// Empty means "no id" (QMP: reply without one; JSON-RPC: a notification, no reply at all).
#[derive(Debug, Clone)]
pub enum IdBuf {
    /// Up to [`IdBuf::INLINE`] bytes, stored in place.
    Inline {
        /// How many of `bytes` are the id.
        len: u8,
        /// The id's bytes, then zeros.
        bytes: [u8; IdBuf::INLINE],
    },
    /// A longer id.
    Heap(Box<[u8]>),
}

impl IdBuf {
    /// Ids up to this size are stored inline; chosen so `IdBuf` stays at 32 bytes.
    pub const INLINE: usize = 30;

    /// Keeps a copy of the raw id bytes.
    pub fn new(raw: &[u8]) -> IdBuf {
        if raw.len() <= Self::INLINE {
            let mut bytes = [0; Self::INLINE];
            bytes[..raw.len()].copy_from_slice(raw);
            IdBuf::Inline { len: raw.len() as u8, bytes }
        } else {
            IdBuf::Heap(raw.into())
        }
    }

    /// The id as it was sent (compact).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            IdBuf::Inline { len, bytes } => &bytes[..usize::from(*len)],
            IdBuf::Heap(bytes) => bytes,
        }
    }
}

/// Where and how an in-band reply goes once its outcome is known.
#[derive(Debug, Clone)]
pub struct ReplyTo {
    /// The request's wire form.
    pub form: Form,
    /// The request's id, echoed.
    pub id: IdBuf,
}

/// JSON-RPC sends nothing back for a notification (a request without id).
fn silent(form: Form, id: &[u8]) -> bool {
    form != Form::Qmp && id.is_empty()
}

/// Starts a success reply: write the value, then [`end_return`].
pub fn begin_return(out: &mut Vec<u8>, form: Form, id: &[u8]) {
    match form {
        Form::Qmp => qmp::begin_return(out),
        Form::Rpc1 | Form::Rpc2 => jsonrpc::begin_result(out, form == Form::Rpc2, id),
    }
}

/// Ends a success reply.
pub fn end_return(out: &mut Vec<u8>, form: Form, id: &[u8]) {
    match form {
        Form::Qmp => qmp::end_reply(out, id),
        Form::Rpc1 | Form::Rpc2 => jsonrpc::end_result(out, form == Form::Rpc2),
    }
}

/// Runs `write_value` between [`begin_return`] and [`end_return`]; on its failure (or for a
/// notification) nothing of the attempt stays in `out`.
pub fn write_return(
    out: &mut Vec<u8>,
    form: Form,
    id: &[u8],
    write_value: impl FnOnce(&mut Vec<u8>) -> Result<(), CommandError>,
) -> Result<(), CommandError> {
    let mark = out.len();
    begin_return(out, form, id);
    match write_value(out) {
        Ok(()) if silent(form, id) => out.truncate(mark),
        Ok(()) => end_return(out, form, id),
        Err(err) => {
            out.truncate(mark);
            return Err(err);
        }
    }
    Ok(())
}

/// An error reply.
pub fn error(out: &mut Vec<u8>, form: Form, err: &CommandError, id: &[u8]) {
    match form {
        _ if silent(form, id) => {}
        Form::Qmp => qmp::error(out, err, id),
        Form::Rpc1 | Form::Rpc2 => jsonrpc::error(out, form == Form::Rpc2, err, id),
    }
}

/// The reply to an executed in-band command.
pub fn outcome<R: Serialize>(out: &mut Vec<u8>, to: &ReplyTo, outcome: &Result<R, CommandError>) {
    let id = to.id.as_bytes();
    let written = match outcome {
        Ok(value) => write_return(out, to.form, id, |out| {
            serde_json::to_writer(out, value)
                .map_err(|e| CommandError::generic(format!("cannot encode the result: {e}")))
        }),
        Err(err) => Err(err.clone()),
    };
    if let Err(err) = written {
        error(out, to.form, &err, id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_ids_spill_to_the_heap_intact() {
        let long = [b'7'; 100];
        assert_eq!(IdBuf::new(&long).as_bytes(), &long[..]);
        assert_eq!(IdBuf::new(b"\"x\"").as_bytes(), b"\"x\"");
    }

    #[test]
    fn each_form_encodes_its_own_envelope_and_notifications_stay_silent() {
        let ok = |form, id: &[u8]| {
            let mut out = Vec::new();
            write_return(&mut out, form, id, |out| {
                out.extend_from_slice(b"[1]");
                Ok(())
            })
            .unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(ok(Form::Qmp, b"7"), "{\"return\":[1],\"id\":7}\r\n");
        assert_eq!(ok(Form::Rpc1, b"7"), "{\"id\":7,\"result\":[1],\"error\":null}\n");
        assert_eq!(ok(Form::Rpc2, b"7"), "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[1]}\n");
        assert_eq!(ok(Form::Rpc1, b""), "");
        assert_eq!(ok(Form::Qmp, b""), "{\"return\":[1]}\r\n");
        let mut out = Vec::new();
        error(&mut out, Form::Rpc2, &CommandError::not_found("no"), b"");
        assert!(out.is_empty());
    }
}
