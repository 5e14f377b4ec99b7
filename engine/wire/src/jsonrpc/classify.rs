//! Classifies a parsed JSON-RPC message straight off the simd-json tape: which form to answer
//! in, whether it is a notification, the method and its arguments. Parser thread only;
//! allocates only to describe an error.
//!
//! `params` may be `[]`, `[{...args...}]`, or (2.0 only) an object of args. Batch arrays are
//! refused with a clear error rather than half-supported.

use simd_json::{Node, StaticNode};

use crate::peek::{as_str, is_object, members};
use crate::qmp::Target;
use crate::reply::Form;
use crate::vocab::CommandError;

/// The OVS keepalive probe, answered on the parser thread with `result` = `params`.
pub const ECHO: &str = "echo";

/// A classified JSON-RPC message.
#[derive(Debug)]
pub struct Request<'t, 'i> {
    /// Form of the reply (2.0 if the request said so, else 1.0).
    pub form: Form,
    /// No `id` (or `"id": null`): executed, never answered.
    pub notification: bool,
    /// Raw `params`, for `echo`.
    pub params: Option<&'t [Node<'i>]>,
    pub target: Result<Target<'t, 'i>, CommandError>,
}

/// Classifies a message whose tape is `nodes`; `default` is the form to answer in when the
/// message is too broken to say.
pub fn classify<'t, 'i>(nodes: &'t [Node<'i>], default: Form) -> Request<'t, 'i> {
    let mut request =
        Request { form: default, notification: false, params: None, target: Ok(Target::EMPTY) };
    match nodes.first() {
        Some(Node::Object { .. }) => {}
        Some(Node::Array { .. }) => {
            request.form = Form::Rpc2;
            request.target = Err(invalid("batch requests are not supported"));
            return request;
        }
        _ => {
            request.target = Err(invalid("JSON-RPC input must be an object"));
            return request;
        }
    }
    request.form =
        if members(nodes).any(|(k, _)| k == "jsonrpc") { Form::Rpc2 } else { Form::Rpc1 };
    request.notification = members(nodes)
        .find(|(k, _)| *k == "id")
        .is_none_or(|(_, v)| matches!(v.first(), Some(Node::Static(StaticNode::Null))));
    request.target = check_members(nodes, request.form, &mut request.params);
    request
}

fn check_members<'t, 'i>(
    nodes: &'t [Node<'i>],
    form: Form,
    params_out: &mut Option<&'t [Node<'i>]>,
) -> Result<Target<'t, 'i>, CommandError> {
    let mut method = None;
    for (key, value) in members(nodes) {
        match key {
            "method" => {
                method = Some(as_str(value).ok_or_else(|| invalid("'method' must be a string"))?);
            }
            "params" => *params_out = Some(value),
            "jsonrpc" if as_str(value) == Some("2.0") => {}
            "jsonrpc" => return Err(invalid("'jsonrpc' must be \"2.0\"")),
            "id" => {}
            _ => return Err(invalid(&format!("unexpected member '{key}'"))),
        }
    }
    let name = method.ok_or_else(|| invalid("missing member 'method'"))?;
    // `echo` takes any `params` and returns them; commands take their arguments from them.
    let args = match *params_out {
        Some(params) if name != ECHO => arguments(params, form)?,
        _ => None,
    };
    Ok(Target { name, args })
}

/// The command arguments inside `params`.
fn arguments<'t, 'i>(
    params: &'t [Node<'i>],
    form: Form,
) -> Result<Option<&'t [Node<'i>]>, CommandError> {
    match params.first() {
        Some(Node::Array { len: 0, .. }) => Ok(None),
        Some(Node::Array { len: 1, .. }) if is_object(&params[1..]) => Ok(Some(&params[1..])),
        Some(Node::Object { .. }) if form == Form::Rpc2 => Ok(Some(params)),
        _ => Err(CommandError::invalid_arguments(
            "'params' must be [] or [{...arguments...}] (or, in 2.0, an object)",
        )),
    }
}

fn invalid(desc: &str) -> CommandError {
    CommandError::invalid_request(format!("Invalid request: {desc}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peek::{PADDING, Peeker};

    fn verdict(text: &str) -> String {
        let mut peeker = Peeker::default();
        let mut buf = text.as_bytes().to_vec();
        buf.resize(text.len() + PADDING, 0);
        let tape = peeker.parse(&mut buf, text.len()).unwrap();
        let r = classify(&tape.0, Form::Rpc1);
        let mut head = format!("{:?}{}", r.form, if r.notification { " notify" } else { "" });
        match r.target {
            Ok(t) => head.push_str(&format!(" {} args={}", t.name, t.args.map_or(0, <[_]>::len))),
            Err(e) => head.push_str(&format!(" {}", e.desc)),
        }
        head
    }

    #[test]
    fn classifies_ovs_and_2_0_requests_and_notifications() {
        let cases = [
            (r#"{"id":1,"method":"ping","params":[]}"#, "Rpc1 ping args=0"),
            (r#"{"method":"work","params":[{"us":1}],"id":"x"}"#, "Rpc1 work args=3"),
            (r#"{"method":"work","params":[{"us":1}],"id":null}"#, "Rpc1 notify work args=3"),
            (r#"{"jsonrpc":"2.0","method":"work","params":{"us":1},"id":2}"#, "Rpc2 work args=3"),
            (r#"{"jsonrpc":"2.0","method":"ping"}"#, "Rpc2 notify ping args=0"),
            (r#"[{"method":"ping"}]"#, "Rpc2 Invalid request: batch requests are not supported"),
            (
                r#"{"method":"ping","params":{"a":1},"id":1}"#,
                "Rpc1 'params' must be [] or [{...arguments...}] (or, in 2.0, an object)",
            ),
            (
                r#"{"method":"ping","params":[1],"id":1}"#,
                "Rpc1 'params' must be [] or [{...arguments...}] (or, in 2.0, an object)",
            ),
            (r#"{"params":[],"id":1}"#, "Rpc1 Invalid request: missing member 'method'"),
            (r#"{"method":"a","x":1,"id":1}"#, "Rpc1 Invalid request: unexpected member 'x'"),
            (
                r#"{"jsonrpc":"1.0","method":"a","id":1}"#,
                "Rpc2 Invalid request: 'jsonrpc' must be \"2.0\"",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(verdict(text), want, "{text}");
        }
    }
}
