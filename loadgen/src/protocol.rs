//! Client side of the wire dialects: request encoding and message classification.
//!
//! Requests are pre-encoded per lane into a [`Template`] (the bytes before and after the id),
//! so sending costs one copy and one integer format. Incoming messages are classified with
//! serde into a [`Message`]; ids are numbers this client chose, so the reply's id is matched
//! as a `u64`. Runs on driver threads; logs nothing per message.
//!
//! - QMP (docs/protocol.md#qmp-dialect, QEMU `qmp-spec.rst`): greeting, `qmp_capabilities`
//!   enabling `oob` when offered, `{"execute"|"exec-oob": C, "arguments": A, "id": N}`,
//!   replies with `return` or `error`, events ignored.
//! - JSON-RPC 1.0 as OVS (`lib/jsonrpc.c`): `{"method": M, "params": P, "id": N}`, replies
//!   with non-null `result` or non-null `error`; the server's `echo` probes are answered.
//! - Echo (loopback ceiling): the request itself comes back and counts as a reply.
//! - etcd's HTTP/JSON gateway: `POST PATH HTTP/1.1` with the lane's arguments as the JSON
//!   body; a reply is a `200` with a JSON object body (without an `error` member), anything
//!   else an error reply. Replies carry no id: they answer requests in order.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::config::Protocol;
use crate::error_texts::shortened;
use crate::workload::Lane;

/// A lane's request with a hole for the id.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    /// Everything up to and including `"id":`; for HTTP the whole request.
    prefix: Vec<u8>,
    /// The id and [`SUFFIX`] follow the prefix (not for HTTP, whose replies carry no id).
    numbered: bool,
}

/// The `Host` header of HTTP requests. HTTP/1.1 requires one (Go's server answers 400
/// without); etcd serves any host unless `--host-whitelist` restricts them, and a template
/// is shared by every remote of the run, so it names none of them.
const HTTP_HOST: &str = "loadgen";

/// What follows the id: close the object; the newline keeps line-reading servers happy and
/// costs one byte.
const SUFFIX: &[u8] = b"}\n";

impl Template {
    /// Pre-encodes `lane` for `protocol`.
    pub(crate) fn new(protocol: Protocol, lane: &Lane) -> Template {
        let cmd = Value::String(lane.cmd.clone());
        let mut text = match protocol {
            Protocol::Qmp | Protocol::Echo => {
                let verb = if lane.oob { "exec-oob" } else { "execute" };
                format!("{{\"{verb}\":{cmd}")
            }
            Protocol::JsonRpc => format!("{{\"method\":{cmd}"),
            Protocol::Etcd => return Template::http_post(lane),
        };
        match (protocol, &lane.args) {
            (Protocol::JsonRpc, None) => text.push_str(",\"params\":[]"),
            (Protocol::JsonRpc, Some(args @ Value::Array(_))) => {
                text.push_str(&format!(",\"params\":{args}"));
            }
            (Protocol::JsonRpc, Some(args)) => text.push_str(&format!(",\"params\":[{args}]")),
            (_, Some(args)) => text.push_str(&format!(",\"arguments\":{args}")),
            (_, None) => {}
        }
        text.push_str(",\"id\":");
        Template { prefix: text.into_bytes(), numbered: true }
    }

    /// `POST` of the lane's arguments (default `{}`) to the lane's path, kept alive.
    fn http_post(lane: &Lane) -> Template {
        let body = lane.args.as_ref().map_or_else(|| "{}".to_owned(), Value::to_string);
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {HTTP_HOST}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            lane.cmd,
            body.len()
        );
        Template { prefix: (head + &body).into_bytes(), numbered: false }
    }

    /// Appends the request with `id` to `out`.
    pub(crate) fn encode(&self, id: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.prefix);
        if self.numbered {
            let mut digits = [0u8; 20];
            out.extend_from_slice(format_u64(id, &mut digits));
            out.extend_from_slice(SUFFIX);
        }
    }
}

/// Formats `n` in decimal into `buf` without allocating.
fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// The QMP negotiation request; `oob` only when the greeting offered it.
pub(crate) fn qmp_capabilities(oob: bool) -> &'static [u8] {
    if oob {
        b"{\"execute\":\"qmp_capabilities\",\"arguments\":{\"enable\":[\"oob\"]}}\n"
    } else {
        b"{\"execute\":\"qmp_capabilities\"}\n"
    }
}

/// One classified incoming message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Message {
    /// A reply carrying one of our numeric ids; `ok` is false for an error reply.
    Reply {
        /// The id.
        id: u64,
        /// `return`/`result` (true) or `error` (false).
        ok: bool,
    },
    /// A reply without an id (QMP answers unparsable input, and `qmp_capabilities`, so).
    Anonymous {
        /// As for `Reply`.
        ok: bool,
    },
    /// A reply without an id that answers the oldest request outstanding on its connection
    /// (HTTP/1.1).
    InOrder {
        /// As for `Reply`.
        ok: bool,
    },
    /// An HTTP reply whose body is not what a JSON gateway sends: it still answers the
    /// oldest outstanding request (HTTP framed it), as an error, and is a protocol error.
    MalformedInOrder,
    /// A reply whose id is not a number we could have sent.
    ForeignId,
    /// The QMP greeting.
    Greeting {
        /// The server offers the `oob` capability.
        oob: bool,
    },
    /// A QMP event or JSON-RPC notification: ignored, counted.
    Event,
    /// A JSON-RPC request from the server; the bytes are our reply (OVS `echo`), if any.
    ServerRequest(Option<Vec<u8>>),
    /// Not valid JSON, or a JSON shape no dialect allows here.
    Malformed,
}

impl Message {
    /// A reply that answers a request with an error: it counts as answered, not as ok.
    pub(crate) fn is_error_reply(&self) -> bool {
        matches!(
            self,
            Message::Reply { ok: false, .. }
                | Message::InOrder { ok: false }
                | Message::MalformedInOrder
        )
    }
}

/// Every member any dialect's message may carry; unknown members are ignored.
#[derive(Deserialize)]
struct Raw {
    id: Option<Value>,
    #[serde(rename = "return")]
    ret: Option<IgnoredAny>,
    result: Option<IgnoredAny>,
    error: Option<IgnoredAny>,
    event: Option<IgnoredAny>,
    method: Option<String>,
    params: Option<Value>,
    #[serde(rename = "QMP")]
    qmp: Option<Greeting>,
}

#[derive(Deserialize)]
struct Greeting {
    #[serde(default)]
    capabilities: Vec<Value>,
}

/// Classifies one framed message.
pub(crate) fn classify(protocol: Protocol, bytes: &[u8]) -> Message {
    let Ok(raw) = serde_json::from_slice::<Raw>(bytes) else {
        return Message::Malformed;
    };
    if protocol == Protocol::Echo {
        return match raw.id.as_ref().and_then(Value::as_u64) {
            Some(id) => Message::Reply { id, ok: true },
            None => Message::ForeignId,
        };
    }
    if let Some(greeting) = raw.qmp {
        let oob = greeting.capabilities.iter().any(|c| c == "oob");
        return Message::Greeting { oob };
    }
    if raw.event.is_some() && protocol == Protocol::Qmp {
        return Message::Event;
    }
    if let Some(method) = raw.method {
        return server_request(&method, raw.id, raw.params);
    }
    let ok = match (raw.ret.or(raw.result).is_some(), raw.error.is_some()) {
        (true, false) => true,
        (false, true) => false,
        _ => return Message::Malformed,
    };
    match raw.id {
        None => Message::Anonymous { ok },
        Some(id) => id.as_u64().map_or(Message::ForeignId, |id| Message::Reply { id, ok }),
    }
}

/// The members of a gateway reply body that matter: an `error` makes it an error reply.
#[derive(Deserialize)]
struct GatewayBody {
    error: Option<IgnoredAny>,
}

/// Classifies one HTTP response: a `2xx` with a JSON object body is a reply, an `error`
/// member or another status an error reply; a `2xx` whose body is not a JSON object is not
/// what a JSON gateway sends.
pub(crate) fn classify_http(status: u16, body: &[u8]) -> Message {
    if !(200..300).contains(&status) {
        return Message::InOrder { ok: false };
    }
    let object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    match serde_json::from_slice::<GatewayBody>(body) {
        Ok(parsed) if object => Message::InOrder { ok: parsed.error.is_none() },
        _ => Message::MalformedInOrder,
    }
}

/// What an error reply says, for the report (called for error replies only, so parsing the
/// message again costs nothing on the success path): QMP's `class: desc`, a string `error`
/// as it is, any other `error` as compact JSON, and the message itself when it has none.
pub(crate) fn error_text(bytes: &[u8]) -> String {
    let message = serde_json::from_slice::<Value>(bytes).ok();
    let text = match message.and_then(|mut m| m.get_mut("error").map(Value::take)) {
        Some(Value::String(text)) => text,
        Some(Value::Object(e)) if e.get("class").is_some_and(Value::is_string) => {
            let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
            format!("{}: {}", field("class"), field("desc"))
        }
        Some(other) => other.to_string(),
        None => String::from_utf8_lossy(bytes).trim().to_owned(),
    };
    shortened(&text)
}

/// What an HTTP error reply says: its status unless `2xx`, and its body's [`error_text`].
pub(crate) fn http_error_text(status: u16, body: &[u8]) -> String {
    let text = error_text(body);
    if (200..300).contains(&status) { text } else { shortened(&format!("HTTP {status}: {text}")) }
}

/// A JSON-RPC message from the server with a `method`: answer `echo`, ignore the rest.
fn server_request(method: &str, id: Option<Value>, params: Option<Value>) -> Message {
    match (method, id) {
        ("echo", Some(id)) => {
            let params = params.unwrap_or_else(|| Value::Array(Vec::new()));
            let reply = serde_json::json!({"id": id, "result": params, "error": null});
            let mut bytes = serde_json::to_vec(&reply).unwrap_or_default();
            bytes.push(b'\n');
            Message::ServerRequest(Some(bytes))
        }
        (_, None) => Message::Event,
        (_, Some(_)) => Message::ServerRequest(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn encoded(protocol: Protocol, lane: &Lane, id: u64) -> Value {
        let mut out = Vec::new();
        Template::new(protocol, lane).encode(id, &mut out);
        assert!(out.ends_with(b"}\n"));
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn encodes_qmp_and_jsonrpc_requests() {
        let work = Lane::new("w", "work", Some(json!({"us": 50})), false);
        let ping = Lane::new("p", "ping", None, true);
        assert_eq!(
            encoded(Protocol::Qmp, &work, 7),
            json!({"execute": "work", "arguments": {"us": 50}, "id": 7})
        );
        assert_eq!(encoded(Protocol::Qmp, &ping, 0), json!({"exec-oob": "ping", "id": 0}));
        assert_eq!(
            encoded(Protocol::JsonRpc, &work, u64::MAX),
            json!({"method": "work", "params": [{"us": 50}], "id": u64::MAX})
        );
        assert_eq!(
            encoded(Protocol::JsonRpc, &ping, 1),
            json!({"method": "ping", "params": [], "id": 1})
        );
    }

    #[test]
    fn classifies_qmp_messages() {
        let q = |s: &str| classify(Protocol::Qmp, s.as_bytes());
        let greeting = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}"#;
        assert_eq!(q(greeting), Message::Greeting { oob: true });
        assert_eq!(
            q(r#"{"QMP": {"version": {}, "capabilities": []}}"#),
            Message::Greeting { oob: false }
        );
        assert_eq!(q(r#"{"return": {}, "id": 5}"#), Message::Reply { id: 5, ok: true });
        assert_eq!(
            q(r#"{"error": {"class": "GenericError", "desc": "x"}, "id": 6}"#),
            Message::Reply { id: 6, ok: false }
        );
        assert_eq!(q(r#"{"return": {}}"#), Message::Anonymous { ok: true });
        assert_eq!(q(r#"{"return": {}, "id": "x"}"#), Message::ForeignId);
        assert_eq!(
            q(r#"{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}"#),
            Message::Event
        );
        assert_eq!(q(r#"{"id": 5}"#), Message::Malformed);
        assert_eq!(q("{nope"), Message::Malformed);
    }

    #[test]
    fn classifies_jsonrpc_messages_and_answers_echo() {
        let j = |s: &str| classify(Protocol::JsonRpc, s.as_bytes());
        assert_eq!(
            j(r#"{"id": 3, "result": {}, "error": null}"#),
            Message::Reply { id: 3, ok: true }
        );
        assert_eq!(
            j(r#"{"id": 4, "result": null, "error": {"error": "x"}}"#),
            Message::Reply { id: 4, ok: false }
        );
        assert_eq!(
            j(r#"{"jsonrpc": "2.0", "id": 4, "error": {"code": -32601, "message": "m"}}"#),
            Message::Reply { id: 4, ok: false }
        );
        assert_eq!(j(r#"{"id": null, "method": "update", "params": []}"#), Message::Event);
        let Message::ServerRequest(Some(reply)) =
            j(r#"{"id": "echo", "method": "echo", "params": []}"#)
        else {
            panic!("echo must be answered");
        };
        let reply: Value = serde_json::from_slice(&reply).unwrap();
        assert_eq!(reply, json!({"id": "echo", "result": [], "error": null}));
    }

    #[test]
    fn encodes_etcd_requests_as_http_posts() {
        let put =
            Lane::new("put", "/v3/kv/put", Some(json!({"key": "YQ==", "value": "MQ=="})), false);
        let mut out = Vec::new();
        let template = Template::new(Protocol::Etcd, &put);
        template.encode(7, &mut out);
        template.encode(8, &mut out);
        let one = "POST /v3/kv/put HTTP/1.1\r\nHost: loadgen\r\nContent-Type: application/json\r\n\
                   Content-Length: 29\r\n\r\n{\"key\":\"YQ==\",\"value\":\"MQ==\"}";
        assert_eq!(String::from_utf8(out).unwrap(), one.repeat(2), "the id is not sent");
        let mut out = Vec::new();
        Template::new(Protocol::Etcd, &Lane::new("s", "/v3/maintenance/status", None, false))
            .encode(0, &mut out);
        assert!(out.ends_with(b"Content-Length: 2\r\n\r\n{}"));
    }

    #[test]
    fn classifies_gateway_replies() {
        let put = r#"{"header":{"cluster_id":"1","member_id":"2","revision":"3","raft_term":"2"}}"#;
        assert_eq!(classify_http(200, put.as_bytes()), Message::InOrder { ok: true });
        let error = r#"{"error":"etcdserver: too many requests","code":14}"#;
        assert_eq!(classify_http(503, error.as_bytes()), Message::InOrder { ok: false });
        assert_eq!(classify_http(200, error.as_bytes()), Message::InOrder { ok: false });
        assert_eq!(classify_http(404, b"404 page not found\n"), Message::InOrder { ok: false });
        assert_eq!(classify_http(200, b"[1]"), Message::MalformedInOrder);
        assert_eq!(classify_http(200, b"ok"), Message::MalformedInOrder);
        assert_eq!(classify_http(200, b""), Message::MalformedInOrder);
    }

    #[test]
    fn error_texts_say_what_each_dialect_said() {
        let qmp =
            r#"{"error": {"class": "GenericError", "desc": "not executed: no leader"}, "id": 6}"#;
        assert_eq!(error_text(qmp.as_bytes()), "GenericError: not executed: no leader");
        let ovs = r#"{"id": 4, "result": null, "error": {"error": "unknown method"}}"#;
        assert_eq!(error_text(ovs.as_bytes()), r#"{"error":"unknown method"}"#);
        let etcd = r#"{"error":"etcdserver: too many requests","code":14}"#;
        assert_eq!(
            http_error_text(503, etcd.as_bytes()),
            "HTTP 503: etcdserver: too many requests"
        );
        assert_eq!(http_error_text(200, etcd.as_bytes()), "etcdserver: too many requests");
        assert_eq!(http_error_text(404, b"404 page not found\n"), "HTTP 404: 404 page not found");
        assert_eq!(error_text(b"[1]"), "[1]", "a message without an error member is itself");
    }

    #[test]
    fn echo_mode_counts_the_request_itself_as_the_reply() {
        let line = br#"{"execute":"work","arguments":{"us":1},"id":9}"#;
        assert_eq!(classify(Protocol::Echo, line), Message::Reply { id: 9, ok: true });
    }
}
