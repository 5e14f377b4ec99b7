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
    /// A reply carrying one of our numeric ids.
    Reply {
        /// The id.
        id: u64,
        /// `None` for `return`/`result`; for an `error`, what it said ([`describe`]).
        error: Option<String>,
    },
    /// A reply without an id (QMP answers unparsable input, and `qmp_capabilities`, so).
    Anonymous {
        /// `return` (true) or `error` (false).
        ok: bool,
    },
    /// A reply without an id that answers the oldest request outstanding on its connection
    /// (HTTP/1.1).
    InOrder {
        /// `None` for a reply; for an error reply, its status and what its body said.
        error: Option<String>,
    },
    /// An HTTP reply whose body is not what a JSON gateway sends: it still answers the
    /// oldest outstanding request (HTTP framed it), as an error, and is a protocol error.
    MalformedInOrder {
        /// The body, as text.
        body: String,
    },
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

/// Every member any dialect's message may carry; unknown members are ignored.
#[derive(Deserialize)]
struct Raw {
    id: Option<Value>,
    #[serde(rename = "return")]
    ret: Option<IgnoredAny>,
    result: Option<IgnoredAny>,
    error: Option<Value>,
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
            Some(id) => Message::Reply { id, error: None },
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
    let error = match (raw.ret.or(raw.result).is_some(), raw.error) {
        (true, None) => None,
        (false, Some(error)) => Some(describe(error)),
        _ => return Message::Malformed,
    };
    match raw.id {
        None => Message::Anonymous { ok: error.is_none() },
        Some(id) => id.as_u64().map_or(Message::ForeignId, |id| Message::Reply { id, error }),
    }
}

/// The members of a gateway reply body that matter: an `error` makes it an error reply.
#[derive(Deserialize)]
struct GatewayBody {
    error: Option<Value>,
}

/// Classifies one HTTP response: a `2xx` with a JSON object body is a reply, an `error`
/// member or another status an error reply; a `2xx` whose body is not a JSON object is not
/// what a JSON gateway sends.
pub(crate) fn classify_http(status: u16, body: &[u8]) -> Message {
    if !(200..300).contains(&status) {
        let error = shortened(&format!("HTTP {status}: {}", body_text(body)));
        return Message::InOrder { error: Some(error) };
    }
    let object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    match serde_json::from_slice::<GatewayBody>(body) {
        Ok(parsed) if object => Message::InOrder { error: parsed.error.map(describe) },
        _ => Message::MalformedInOrder { body: body_text(body) },
    }
}

/// What an `error` member says, for the report: QMP's `class: desc`, a string as it is,
/// anything else as compact JSON; cut to the length the report keeps.
fn describe(error: Value) -> String {
    let text = match error {
        Value::String(text) => text,
        Value::Object(e) if e.get("class").is_some_and(Value::is_string) => {
            let field = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
            format!("{}: {}", field("class"), field("desc"))
        }
        other => other.to_string(),
    };
    shortened(&text)
}

/// What an HTTP body that is not a reply says: its `error` member if it is a JSON object
/// with one, otherwise the body itself as text.
fn body_text(body: &[u8]) -> String {
    let message = serde_json::from_slice::<Value>(body).ok();
    match message.and_then(|mut m| m.get_mut("error").map(Value::take)) {
        Some(error) if !error.is_null() => describe(error),
        _ => shortened(String::from_utf8_lossy(body).trim()),
    }
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
        assert_eq!(q(r#"{"return": {}, "id": 5}"#), Message::Reply { id: 5, error: None });
        assert_eq!(
            q(r#"{"error": {"class": "GenericError", "desc": "x"}, "id": 6}"#),
            Message::Reply { id: 6, error: Some("GenericError: x".into()) }
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
            Message::Reply { id: 3, error: None }
        );
        assert_eq!(
            j(r#"{"id": 4, "result": null, "error": {"error": "x"}}"#),
            Message::Reply { id: 4, error: Some(r#"{"error":"x"}"#.into()) }
        );
        assert_eq!(
            j(r#"{"jsonrpc": "2.0", "id": 4, "error": {"code": -32601, "message": "m"}}"#),
            Message::Reply { id: 4, error: Some(r#"{"code":-32601,"message":"m"}"#.into()) }
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
        assert_eq!(classify_http(200, put.as_bytes()), Message::InOrder { error: None });
        let error = r#"{"error":"etcdserver: too many requests","code":14}"#;
        let said = |text: &str| Message::InOrder { error: Some(text.into()) };
        assert_eq!(
            classify_http(503, error.as_bytes()),
            said("HTTP 503: etcdserver: too many requests")
        );
        assert_eq!(classify_http(200, error.as_bytes()), said("etcdserver: too many requests"));
        assert_eq!(
            classify_http(404, b"404 page not found\n"),
            said("HTTP 404: 404 page not found")
        );
        let malformed = |body: &str| Message::MalformedInOrder { body: body.into() };
        assert_eq!(
            classify_http(200, b"[1]"),
            malformed("[1]"),
            "a body without an error is itself"
        );
        assert_eq!(classify_http(200, b"ok"), malformed("ok"));
        assert_eq!(classify_http(200, b""), malformed(""));
    }

    #[test]
    fn error_texts_say_what_each_dialect_said() {
        let qmp =
            r#"{"error": {"class": "GenericError", "desc": "not executed: no leader"}, "id": 6}"#;
        let error = Some("GenericError: not executed: no leader".to_owned());
        assert_eq!(classify(Protocol::Qmp, qmp.as_bytes()), Message::Reply { id: 6, error });
        let ovs = r#"{"id": 4, "result": null, "error": {"error": "unknown method"}}"#;
        let error = Some(r#"{"error":"unknown method"}"#.to_owned());
        assert_eq!(classify(Protocol::JsonRpc, ovs.as_bytes()), Message::Reply { id: 4, error });
        let long = format!(r#"{{"error": "{}", "id": 7}}"#, "x".repeat(500));
        let Message::Reply { error: Some(text), .. } = classify(Protocol::JsonRpc, long.as_bytes())
        else {
            panic!("an error reply");
        };
        assert_eq!(text.chars().count(), crate::error_texts::TEXT_MAX + 1, "cut, with its mark");
    }

    #[test]
    fn echo_mode_counts_the_request_itself_as_the_reply() {
        let line = br#"{"execute":"work","arguments":{"us":1},"id":9}"#;
        assert_eq!(classify(Protocol::Echo, line), Message::Reply { id: 9, error: None });
    }
}
