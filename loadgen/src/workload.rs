//! Lanes of traffic: what to send, how fast, in-band or out-of-band.
//!
//! A lane is one request template (command + arguments) with a rate. Lanes come from
//! `--lane` specs (`name=ping,oob,rate=1000,cmd=ping`), from a small JSON workload file, or
//! from [`default_lanes`]. Parsed once before the run; nothing here runs on the send path.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

/// One stream of identical requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lane {
    /// Label in reports and file names; `[A-Za-z0-9_-]+`, unique within a run.
    pub name: String,
    /// Command (QMP `execute`) or method (JSON-RPC) name.
    #[serde(alias = "command")]
    pub cmd: String,
    /// QMP `arguments` (an object) or JSON-RPC `params` (an object is wrapped in `[...]`).
    #[serde(default)]
    pub args: Option<Value>,
    /// Sent as QMP `exec-oob`; its replies may overtake in-band ones, so it is exempt from
    /// the in-band order check. For JSON-RPC only the order check changes.
    #[serde(default)]
    pub oob: bool,
    /// Fixed rate in requests/s across all connections; `None` takes a share of `--rate`.
    #[serde(default)]
    pub rate: Option<f64>,
    /// Weight of this lane in `--rate` (open loop) or in the request mix (closed loop).
    #[serde(default = "one")]
    pub share: f64,
}

fn one() -> f64 {
    1.0
}

impl Lane {
    /// A lane with share 1 and no fixed rate.
    pub fn new(name: &str, cmd: &str, args: Option<Value>, oob: bool) -> Lane {
        Lane { name: name.into(), cmd: cmd.into(), args, oob, rate: None, share: 1.0 }
    }

    /// Sets a fixed rate (builder style, for tests and embedders).
    pub fn with_rate(mut self, rate: f64) -> Lane {
        self.rate = Some(rate);
        self
    }

    /// Sets the share (builder style).
    pub fn with_share(mut self, share: f64) -> Lane {
        self.share = share;
        self
    }
}

/// The default mixed workload: mostly in-band `work` (20 µs of simulated service time each,
/// so 4,500/s keeps the engine's executor about 9% busy and the queue short) plus a steady
/// 10% trickle of `exec-oob ping`, whose tail shows whether OOB stays independent of the
/// in-band queue.
pub fn default_lanes() -> Vec<Lane> {
    vec![
        Lane::new("work", "work", Some(serde_json::json!({"us": 20})), false).with_share(9.0),
        Lane::new("ping", "ping", None, true),
    ]
}

/// Parses a `--lane` spec: comma-separated `key=value` items and the bare flag `oob`.
/// Keys: `name`, `cmd`, `args` (JSON; may contain commas), `rate`, `share`, `oob=true|false`.
pub fn parse_lane(spec: &str) -> Result<Lane, Error> {
    let bad = |why: String| Error::Lane { spec: spec.to_owned(), why };
    let mut lane = Lane::new("", "", None, false);
    for (key, value) in split_items(spec).map_err(bad)? {
        apply_item(&mut lane, key, value).map_err(bad)?;
    }
    if lane.cmd.is_empty() {
        return Err(bad("missing 'cmd=COMMAND'".into()));
    }
    if lane.name.is_empty() {
        lane.name = lane.cmd.clone();
    }
    check_lane(&lane).map_err(bad)?;
    Ok(lane)
}

fn apply_item(lane: &mut Lane, key: &str, value: Option<&str>) -> Result<(), String> {
    let need = |v: Option<&str>| v.map(str::to_owned).ok_or(format!("'{key}' needs a value"));
    match key {
        "name" => lane.name = need(value)?,
        "cmd" | "command" | "method" => lane.cmd = need(value)?,
        "args" | "arguments" | "params" => {
            let text = need(value)?;
            lane.args = Some(serde_json::from_str(&text).map_err(|e| format!("args: {e}"))?);
        }
        "rate" => lane.rate = Some(parse_number(key, &need(value)?)?),
        "share" => lane.share = parse_number(key, &need(value)?)?,
        "oob" => {
            lane.oob = match value {
                None | Some("true") => true,
                Some("false") => false,
                Some(v) => return Err(format!("oob={v}: expected true or false")),
            }
        }
        _ => return Err(format!("unknown key '{key}' (name, cmd, args, rate, share, oob)")),
    }
    Ok(())
}

fn parse_number(key: &str, text: &str) -> Result<f64, String> {
    text.parse::<f64>().map_err(|_| format!("{key}={text}: not a number"))
}

/// Splits `a=1,b={"x":1,"y":2},oob` into items, keeping commas inside JSON brackets/strings.
fn split_items(spec: &str) -> Result<Vec<(&str, Option<&str>)>, String> {
    let mut items = Vec::new();
    let (mut depth, mut in_str, mut escape, mut start) = (0i32, false, false, 0);
    for (i, c) in spec.char_indices() {
        match (in_str, escape, c) {
            (true, true, _) => escape = false,
            (true, false, '\\') => escape = true,
            (true, false, '"') => in_str = false,
            (true, ..) => {}
            (false, _, '"') => in_str = true,
            (false, _, '{' | '[') => depth += 1,
            (false, _, '}' | ']') => depth -= 1,
            (false, _, ',') if depth == 0 => {
                items.push(&spec[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 || in_str {
        return Err("unbalanced brackets or quotes in args".into());
    }
    items.push(&spec[start..]);
    items
        .into_iter()
        .filter(|item| !item.trim().is_empty())
        .map(|item| match item.split_once('=') {
            Some((k, v)) => Ok((k.trim(), Some(v.trim()))),
            None => Ok((item.trim(), None)),
        })
        .collect()
}

/// A workload file: `{"lanes": [{"name": "work", "cmd": "work", "args": {"us": 50},
/// "rate": 5000}, {"name": "ping", "cmd": "ping", "oob": true, "rate": 500}]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadFile {
    lanes: Vec<Lane>,
}

/// Parses a JSON workload file's text.
pub fn parse_workload(text: &str) -> Result<Vec<Lane>, Error> {
    let file: WorkloadFile = serde_json::from_str(text)
        .map_err(|e| Error::Lane { spec: "workload file".into(), why: e.to_string() })?;
    for lane in &file.lanes {
        check_lane(lane).map_err(|why| Error::Lane { spec: lane.name.clone(), why })?;
    }
    Ok(file.lanes)
}

/// Checks one lane on its own; [`check_lanes`] checks the set.
fn check_lane(lane: &Lane) -> Result<(), String> {
    let name_ok = lane.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if lane.name.is_empty() || !name_ok {
        return Err(format!("name '{}' must be non-empty [A-Za-z0-9_-]", lane.name));
    }
    if let Some(rate) = lane.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        return Err(format!("rate {rate} must be a positive number"));
    }
    if !(lane.share.is_finite() && lane.share > 0.0) {
        return Err(format!("share {} must be a positive number", lane.share));
    }
    if lane.cmd.contains(['"', '\\']) {
        return Err("cmd must not contain quotes or backslashes".into());
    }
    Ok(())
}

/// Checks a lane set: non-empty, valid lanes, unique names.
pub(crate) fn check_lanes(lanes: &[Lane]) -> Result<(), Error> {
    if lanes.is_empty() {
        return Err(Error::Config("no lanes".into()));
    }
    for (i, lane) in lanes.iter().enumerate() {
        check_lane(lane).map_err(|why| Error::Lane { spec: lane.name.clone(), why })?;
        if lanes[..i].iter().any(|other| other.name == lane.name) {
            return Err(Error::Config(format!("two lanes are named '{}'", lane.name)));
        }
    }
    Ok(())
}

/// Each lane's rate in requests/s: its fixed rate, or its share of `total` among the lanes
/// without one.
pub(crate) fn resolve_rates(lanes: &[Lane], total: f64) -> Vec<f64> {
    let shares: f64 = lanes.iter().filter(|l| l.rate.is_none()).map(|l| l.share).sum();
    lanes.iter().map(|l| l.rate.unwrap_or(total * l.share / shares)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_specs_with_json_args_and_flags() {
        let lane = parse_lane(r#"name=work,rate=5000,cmd=work,args={"us":50,"x":[1,2]}"#).unwrap();
        assert_eq!(lane.name, "work");
        assert_eq!(lane.args, Some(json!({"us": 50, "x": [1, 2]})));
        assert_eq!(lane.rate, Some(5000.0));
        assert!(!lane.oob);
        let ping = parse_lane("oob,cmd=ping,share=2").unwrap();
        assert_eq!((ping.name.as_str(), ping.oob, ping.share), ("ping", true, 2.0));
        let yank = parse_lane(r#"cmd=yank,oob,args={"instances": []}"#).unwrap();
        assert_eq!(yank.args, Some(json!({"instances": []})));
    }

    #[test]
    fn rejects_bad_specs_with_reasons() {
        for (spec, needle) in [
            ("name=x", "missing 'cmd"),
            ("cmd=x,rate=fast", "not a number"),
            ("cmd=x,rate=-1", "positive"),
            ("cmd=x,args={", "unbalanced"),
            ("cmd=x,bogus=1", "unknown key"),
            ("cmd=x,name=a b", "name"),
            ("cmd=x,args={nope}", "args"),
        ] {
            let err = parse_lane(spec).unwrap_err().to_string();
            assert!(err.contains(needle), "{spec}: {err}");
        }
    }

    #[test]
    fn resolves_fixed_rates_and_shares() {
        let lanes = vec![
            Lane::new("a", "a", None, false).with_share(3.0),
            Lane::new("b", "b", None, false),
            Lane::new("c", "c", None, true).with_rate(7.0),
        ];
        assert_eq!(resolve_rates(&lanes, 100.0), vec![75.0, 25.0, 7.0]);
        assert_eq!(resolve_rates(&default_lanes(), 5000.0), vec![4500.0, 500.0]);
    }

    #[test]
    fn parses_workload_file_and_checks_names() {
        let text = r#"{"lanes": [{"name": "w", "cmd": "work", "args": {"us": 1}, "rate": 10},
                                  {"name": "p", "cmd": "ping", "oob": true}]}"#;
        let lanes = parse_workload(text).unwrap();
        assert_eq!(lanes[1], Lane::new("p", "ping", None, true));
        assert!(parse_workload(r#"{"lanes": [{"cmd": "x"}]}"#).is_err());
        let dup = vec![Lane::new("a", "x", None, false), Lane::new("a", "y", None, false)];
        assert!(check_lanes(&dup).unwrap_err().to_string().contains("two lanes"));
    }
}
