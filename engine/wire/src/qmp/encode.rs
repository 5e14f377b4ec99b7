//! QMP output: compact one-line JSON followed by `\r\n`, appended whole to a connection's
//! write buffer (so an event never lands inside a reply). Runs on parser threads only.
//! The `id` is copied from the request's own bytes; an empty slice means "no id".

use std::time::UNIX_EPOCH;

use crate::vocab::{CommandError, Event, VersionInfo};

/// Line terminator QEMU uses and line-reading clients (qemu.qmp, libvirt) expect.
const EOL: &[u8] = b"\r\n";

/// The greeting sent on connect.
pub fn greeting(out: &mut Vec<u8>, version: &VersionInfo) {
    out.extend_from_slice(b"{\"QMP\":{\"version\":");
    serde_json::to_writer(&mut *out, version).expect("version info always encodes");
    out.extend_from_slice(b",\"capabilities\":[\"oob\"]}}");
    out.extend_from_slice(EOL);
}

/// Starts a success reply; write the value, then [`end_reply`].
pub fn begin_return(out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"return\":");
}

/// Ends a reply with its id.
pub fn end_reply(out: &mut Vec<u8>, id: &[u8]) {
    if !id.is_empty() {
        out.extend_from_slice(b",\"id\":");
        out.extend_from_slice(id);
    }
    out.push(b'}');
    out.extend_from_slice(EOL);
}

/// An error reply.
pub fn error(out: &mut Vec<u8>, err: &CommandError, id: &[u8]) {
    out.extend_from_slice(b"{\"error\":{\"class\":\"");
    out.extend_from_slice(err.class.as_str().as_bytes());
    out.extend_from_slice(b"\",\"desc\":");
    serde_json::to_writer(&mut *out, &err.desc).expect("a string always encodes");
    out.push(b'}');
    end_reply(out, id);
}

/// An event, with QEMU's timestamp shape.
pub fn event(out: &mut Vec<u8>, event: &Event) {
    let since = event.at.duration_since(UNIX_EPOCH).unwrap_or_default();
    out.extend_from_slice(b"{\"event\":");
    serde_json::to_writer(&mut *out, &event.name).expect("a string always encodes");
    if let Some(data) = &event.data {
        out.extend_from_slice(b",\"data\":");
        serde_json::to_writer(&mut *out, data).expect("a JSON value always encodes");
    }
    let stamp = format!(
        ",\"timestamp\":{{\"seconds\":{},\"microseconds\":{}}}}}",
        since.as_secs(),
        since.subsec_micros()
    );
    out.extend_from_slice(stamp.as_bytes());
    out.extend_from_slice(EOL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_replies_errors_and_events_on_one_line() {
        let mut out = Vec::new();
        begin_return(&mut out);
        out.extend_from_slice(b"{}");
        end_reply(&mut out, br#"{"a":[1]}"#);
        error(&mut out, &CommandError::not_found("no \"x\""), b"");
        let at = UNIX_EPOCH + std::time::Duration::from_micros(5_000_007);
        let ev = Event { name: "E".into(), data: Some(serde_json::json!({"k": 1})), at };
        event(&mut out, &ev);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        assert_eq!(
            lines,
            vec![
                r#"{"return":{},"id":{"a":[1]}}"#,
                r#"{"error":{"class":"CommandNotFound","desc":"no \"x\""}}"#,
                r#"{"event":"E","data":{"k":1},"timestamp":{"seconds":5,"microseconds":7}}"#,
            ]
        );
    }
}
