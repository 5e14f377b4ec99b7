//! Classifies a parsed QMP request the way QEMU's `qmp_dispatch` does, straight off the
//! simd-json tape: lane first (from `exec-oob` / `execute` presence, as `qmp_is_oob`), then
//! the member checks of `qmp_dispatch_check_obj` in input order, then the session mode.
//! Runs on the parser thread; borrows everything, allocates only to describe an error.

use serde::Deserialize;
use simd_json::Node;

use super::CAPABILITIES;
use crate::peek::{as_str, is_object, members};
use crate::vocab::CommandError;

/// Where a session stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Only `qmp_capabilities` is accepted; no events are sent.
    Negotiating,
    /// Commands run; `oob` says whether `exec-oob` was negotiated.
    Commands {
        /// `exec-oob` was enabled at negotiation.
        oob: bool,
    },
}

/// A classified request.
#[derive(Debug)]
pub struct Request<'t, 'i> {
    /// Sent with `exec-oob` and without `execute`: answered at once, errors included.
    pub oob: bool,
    /// The command to run, or the error to answer.
    pub target: Result<Target<'t, 'i>, CommandError>,
}

/// A command name with its (unchecked) arguments; JSON-RPC classifies into the same shape.
#[derive(Debug)]
pub struct Target<'t, 'i> {
    /// The command name, borrowed from the input.
    pub name: &'i str,
    /// The `arguments` value's nodes on the tape, if present.
    pub args: Option<&'t [Node<'i>]>,
}

impl Target<'_, '_> {
    /// Placeholder before classification finishes.
    pub const EMPTY: Target<'static, 'static> = Target { name: "", args: None };
}

/// Arguments of `qmp_capabilities`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitiesArgs {
    /// Capabilities the client asks for (`["oob"]`).
    pub enable: Option<Vec<String>>,
}

/// Classifies a request whose tape is `nodes`.
pub fn classify<'t, 'i>(nodes: &'t [Node<'i>], mode: Mode) -> Request<'t, 'i> {
    if !is_object(nodes) {
        let target = Err(CommandError::generic("QMP input must be a JSON object"));
        return Request { oob: false, target };
    }
    let has = |key: &str| members(nodes).any(|(k, _)| k == key);
    let oob = has("exec-oob") && !has("execute");
    Request { oob, target: check_members(nodes, mode).and_then(|t| check_mode(t, mode, oob)) }
}

/// QEMU's `qmp_dispatch_check_obj`: member types, clashes and unknown members.
fn check_members<'t, 'i>(
    nodes: &'t [Node<'i>],
    mode: Mode,
) -> Result<Target<'t, 'i>, CommandError> {
    let oob_allowed = matches!(mode, Mode::Commands { oob: true });
    let mut exec: Option<&'i str> = None;
    let mut args = None;
    for (key, value) in members(nodes) {
        match key {
            "execute" | "exec-oob" if key == "execute" || oob_allowed => {
                let Some(name) = as_str(value) else {
                    return Err(CommandError::generic(format!(
                        "QMP input member '{key}' must be a string"
                    )));
                };
                if exec.is_some() {
                    // QEMU's wording, whichever member came first.
                    return Err(CommandError::generic(
                        "QMP input member 'execute' clashes with 'exec-oob'",
                    ));
                }
                exec = Some(name);
            }
            "arguments" => {
                if !is_object(value) {
                    return Err(CommandError::generic(
                        "QMP input member 'arguments' must be an object",
                    ));
                }
                args = Some(value);
            }
            "id" => {}
            _ => {
                return Err(CommandError::generic(format!(
                    "QMP input member '{key}' is unexpected"
                )));
            }
        }
    }
    let name = exec.ok_or_else(|| CommandError::generic("QMP input lacks member 'execute'"))?;
    Ok(Target { name, args })
}

/// What the session mode allows: only `qmp_capabilities` while negotiating, never after.
fn check_mode<'t, 'i>(
    target: Target<'t, 'i>,
    mode: Mode,
    oob: bool,
) -> Result<Target<'t, 'i>, CommandError> {
    let is_capabilities = target.name == CAPABILITIES && !oob;
    match mode {
        Mode::Negotiating if !is_capabilities => Err(CommandError::not_found(
            "Expecting capabilities negotiation with 'qmp_capabilities'",
        )),
        Mode::Commands { .. } if target.name == CAPABILITIES && oob => {
            Err(CommandError::generic(format!("The command {CAPABILITIES} does not support OOB")))
        }
        Mode::Commands { .. } if target.name == CAPABILITIES => Err(CommandError::not_found(
            "Capabilities negotiation is already complete, command ignored",
        )),
        _ => Ok(target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peek::{PADDING, Peeker};

    /// Classifies `text` and renders the verdict as `oob? name|class: desc`.
    fn verdict(text: &str, mode: Mode) -> String {
        let mut peeker = Peeker::default();
        let mut buf = text.as_bytes().to_vec();
        buf.resize(text.len() + PADDING, 0);
        let tape = peeker.parse(&mut buf, text.len()).unwrap();
        let req = classify(&tape.0, mode);
        let lane = if req.oob { "oob " } else { "" };
        match req.target {
            Ok(t) => format!("{lane}{} args={}", t.name, t.args.is_some()),
            Err(e) => format!("{lane}{e}"),
        }
    }

    const OOB: Mode = Mode::Commands { oob: true };
    const PLAIN: Mode = Mode::Commands { oob: false };

    #[test]
    fn follows_qemus_checks_in_order() {
        let cases = [
            (r#"{"execute":"ping","id":1}"#, OOB, "ping args=false"),
            (r#"{"exec-oob":"ping","arguments":{}}"#, OOB, "oob ping args=true"),
            (r#"[1]"#, OOB, "GenericError: QMP input must be a JSON object"),
            (
                r#"{"exec-oob":"ping"}"#,
                PLAIN,
                "oob GenericError: QMP input member 'exec-oob' is unexpected",
            ),
            (
                r#"{"execute":"a","exec-oob":"b"}"#,
                OOB,
                "GenericError: QMP input member 'execute' clashes with 'exec-oob'",
            ),
            (r#"{"id":1}"#, OOB, "GenericError: QMP input lacks member 'execute'"),
            (r#"{"execute":1}"#, OOB, "GenericError: QMP input member 'execute' must be a string"),
            (
                r#"{"execute":"x","arguments":[]}"#,
                OOB,
                "GenericError: QMP input member 'arguments' must be an object",
            ),
            (
                r#"{"execute":"x","foo":1}"#,
                OOB,
                "GenericError: QMP input member 'foo' is unexpected",
            ),
            (
                r#"{"execute":"ping"}"#,
                Mode::Negotiating,
                "CommandNotFound: Expecting capabilities negotiation with 'qmp_capabilities'",
            ),
            (r#"{"execute":"qmp_capabilities"}"#, Mode::Negotiating, "qmp_capabilities args=false"),
            (
                r#"{"exec-oob":"qmp_capabilities"}"#,
                OOB,
                "oob GenericError: The command qmp_capabilities does not support OOB",
            ),
            (
                r#"{"execute":"qmp_capabilities"}"#,
                PLAIN,
                "CommandNotFound: Capabilities negotiation is already complete, command ignored",
            ),
        ];
        for (text, mode, want) in cases {
            assert_eq!(verdict(text, mode), want, "{text}");
        }
    }
}
