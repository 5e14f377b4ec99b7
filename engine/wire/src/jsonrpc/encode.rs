//! JSON-RPC output: compact JSON followed by `\n`. OVS 1.0 replies carry both `result` and
//! `error`, one of them null (`result` never null: OVS clients reject that); 2.0 replies carry
//! `jsonrpc` and one of the two. The `id` is the request's own bytes.

use crate::vocab::CommandError;

/// Starts a result reply; write the value, then [`end_result`].
pub fn begin_result(out: &mut Vec<u8>, v2: bool, id: &[u8]) {
    out.extend_from_slice(if v2 { b"{\"jsonrpc\":\"2.0\",\"id\":" } else { b"{\"id\":" });
    out.extend_from_slice(id);
    out.extend_from_slice(b",\"result\":");
}

/// Ends a result reply.
pub fn end_result(out: &mut Vec<u8>, v2: bool) {
    out.extend_from_slice(if v2 { b"}\n" } else { b",\"error\":null}\n" });
}

/// An error reply: 1.0 `{"error": CLASS, "details": TEXT}`, 2.0 `{"code": N, "message": TEXT}`.
pub fn error(out: &mut Vec<u8>, v2: bool, err: &CommandError, id: &[u8]) {
    if v2 {
        out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
        out.extend_from_slice(id);
        out.extend_from_slice(
            format!(",\"error\":{{\"code\":{},\"message\":", err.rpc_code()).as_bytes(),
        );
    } else {
        out.extend_from_slice(b"{\"id\":");
        out.extend_from_slice(id);
        out.extend_from_slice(b",\"result\":null,\"error\":{\"error\":\"");
        out.extend_from_slice(err.class.as_str().as_bytes());
        out.extend_from_slice(b"\",\"details\":");
    }
    serde_json::to_writer(&mut *out, &err.desc).expect("a string always encodes");
    out.extend_from_slice(b"}}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_in_both_forms() {
        let mut out = Vec::new();
        error(&mut out, false, &CommandError::not_found("no \"x\""), b"\"echo\"");
        error(&mut out, true, &CommandError::not_found("no"), b"null");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"id\":\"echo\",\"result\":null,\"error\":{\"error\":\"CommandNotFound\",\"details\":\"no \\\"x\\\"\"}}\n\
             {\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32601,\"message\":\"no\"}}\n"
        );
    }
}
