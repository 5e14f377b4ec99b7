//! The request corpus the peek and framer benchmarks run on: QMP and OVS JSON-RPC requests as
//! real clients send them (libvirt-style ids, `blockdev-add`, `transaction`, `yank`,
//! `human-monitor-command`, OVSDB-like `transact`, JSON-RPC 2.0), 40 B to 4 KiB, with nested
//! arguments, escaped strings (`\"`, `\\`, `\n`, `\u00e9`, surrogate pairs) and the odd
//! whitespace. Deterministic (a fixed xorshift seed), so every run and every machine measures
//! the same bytes.
//!
//! JSON-RPC requests carry their arguments as `params: [{...}]`, the shape the engine's dialect
//! accepts (docs/protocol.md#json-rpc-dialect), rather than OVSDB's positional `["Open_vSwitch",
//! op...]`, so every message takes the success path of the peek.

/// Largest message in the "small" corpus: one control request without bulk arguments (a
/// `ping`, a `query-*`, a short `counter-add`), which is what an OOB lane mostly carries.
pub const SMALL_MAX: usize = 256;
/// Smallest message generated (an OVS `echo` probe is 41 bytes).
pub const MIN_LEN: usize = 40;
/// Largest message generated.
pub const MAX_LEN: usize = 4096;
/// Messages in the corpus: enough that every template appears with many sizes.
const COUNT: usize = 512;

/// Which wire protocol a message is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// QEMU's monitor protocol (`execute` / `exec-oob`).
    Qmp,
    /// OVS JSON-RPC 1.0 or JSON-RPC 2.0 (`method` / `params`).
    JsonRpc,
}

/// One request.
#[derive(Clone, Debug)]
pub struct Message {
    /// Its wire protocol.
    pub dialect: Dialect,
    /// Sent with `exec-oob` (QMP only).
    pub oob: bool,
    /// The request, one JSON object without separator.
    pub bytes: Vec<u8>,
}

impl Message {
    /// The message followed by `padding` zero bytes, as the engine's read buffer holds it.
    pub fn padded(&self, padding: usize) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.bytes.len() + padding);
        buf.extend_from_slice(&self.bytes);
        buf.resize(self.bytes.len() + padding, 0);
        buf
    }
}

/// The whole corpus, 40 B to 4 KiB.
pub fn corpus() -> Vec<Message> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..COUNT).map(|i| generate(i, &mut rng)).collect()
}

/// The messages of at most [`SMALL_MAX`] bytes.
pub fn small() -> Vec<Message> {
    corpus().into_iter().filter(|m| m.bytes.len() <= SMALL_MAX).collect()
}

/// The messages over [`SMALL_MAX`] bytes.
pub fn large() -> Vec<Message> {
    corpus().into_iter().filter(|m| m.bytes.len() > SMALL_MAX).collect()
}

/// Total bytes of `messages`.
pub fn total_bytes(messages: &[Message]) -> u64 {
    messages.iter().map(|m| m.bytes.len() as u64).sum()
}

/// A pipelined byte stream of whole messages, at least `min_bytes` long: the corpus repeated,
/// separated as real clients do (nothing, `\r\n`, `\n`, a space).
pub fn stream(messages: &[Message], min_bytes: usize) -> (Vec<u8>, usize) {
    const SEPARATORS: [&[u8]; 4] = [b"", b"\r\n", b"\n", b" "];
    let mut out = Vec::with_capacity(min_bytes + MAX_LEN);
    let mut count = 0;
    for (i, message) in messages.iter().cycle().enumerate() {
        if out.len() >= min_bytes {
            break;
        }
        out.extend_from_slice(&message.bytes);
        out.extend_from_slice(SEPARATORS[i % SEPARATORS.len()]);
        count += 1;
    }
    (out, count)
}

/// xorshift64: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    /// A repeat count skewed small (most requests are short), up to `max`.
    fn fill(&mut self, max: usize) -> usize {
        let scale = 1 << self.below(7);
        self.below(scale).min(max)
    }
}

/// Builds message `i`; bulk templates shrink their repeat count until they fit [`MAX_LEN`].
fn generate(i: usize, rng: &mut Rng) -> Message {
    let template = rng.below(TEMPLATES);
    let mut fill = rng.fill(64);
    loop {
        let message = template_message(template, i, fill);
        if message.bytes.len() <= MAX_LEN || fill == 0 {
            return message;
        }
        fill = fill * 3 / 4;
    }
}

/// Number of templates in [`template_message`].
const TEMPLATES: usize = 13;

fn template_message(template: usize, i: usize, fill: usize) -> Message {
    let (dialect, oob, text) = match template {
        0 => (Dialect::Qmp, true, format!(r#"{{"exec-oob":"ping","id":"oob-ping-{i:06}"}}"#)),
        1 => (Dialect::Qmp, false, format!(r#"{{"execute":"query-status","id":"libvirt-{i}"}}"#)),
        2 => (Dialect::Qmp, false, counter_add(i)),
        3 => (Dialect::Qmp, false, set_password(i)),
        4 => (Dialect::Qmp, true, yank(i, fill)),
        5 => (Dialect::Qmp, false, human_monitor(i, fill)),
        6 => (Dialect::Qmp, false, blockdev_add(i)),
        7 => (Dialect::Qmp, false, transaction(i, fill)),
        8 => (Dialect::Qmp, false, spaced_work(i)),
        9 => (Dialect::JsonRpc, false, r#"{"id":"echo","method":"echo","params":[]}"#.to_owned()),
        10 => (Dialect::JsonRpc, false, ovsdb_select(i)),
        11 => (Dialect::JsonRpc, false, rpc2_counter_add(i)),
        _ => (Dialect::JsonRpc, false, ovsdb_insert(i, fill)),
    };
    Message { dialect, oob, bytes: text.into_bytes() }
}

fn counter_add(i: usize) -> String {
    format!(r#"{{"execute":"counter-add","arguments":{{"delta":{}}},"id":{i}}}"#, i % 7)
}

fn set_password(i: usize) -> String {
    format!(
        r#"{{"execute":"set_password","arguments":{{"protocol":"vnc","password":"p\"{i}\\\u00e9","connected":"keep"}},"id":"libvirt-{i}"}}"#
    )
}

fn spaced_work(i: usize) -> String {
    format!(
        "{{ \"execute\" : \"work\",\r\n  \"arguments\" : {{ \"us\" : {} }}, \"id\" : {i} }}",
        i % 50
    )
}

fn yank(i: usize, fill: usize) -> String {
    let instances: Vec<String> = (0..fill)
        .map(|k| match k % 3 {
            0 => format!(r#"{{"type":"chardev","id":"char{k}"}}"#),
            1 => format!(r#"{{"type":"block-node","node-name":"drive-{k}"}}"#),
            _ => r#"{"type":"migration"}"#.to_owned(),
        })
        .collect();
    format!(
        r#"{{"exec-oob":"yank","arguments":{{"instances":[{}]}},"id":"yank-{i}"}}"#,
        instances.join(",")
    )
}

fn human_monitor(i: usize, fill: usize) -> String {
    let line = r#"info \"block\" \\dev\\vda\n\tcaf\u00e9 \ud83d\ude00 ok\r\n"#;
    format!(
        r#"{{"execute":"human-monitor-command","arguments":{{"command-line":"{}"}},"id":{i}}}"#,
        line.repeat(fill + 1)
    )
}

fn blockdev_add(i: usize) -> String {
    format!(
        concat!(
            r#"{{"execute":"blockdev-add","arguments":{{"driver":"qcow2","#,
            r#""node-name":"drive-virtio-disk{i}","file":{{"driver":"file","#,
            r#""filename":"/var/lib/libvirt/images/vm \"{i}\"\\disk.qcow2","aio":"native","#,
            r#""locking":"off"}},"cache":{{"direct":true,"no-flush":false}},"discard":"unmap","#,
            r#""detect-zeroes":"unmap","read-only":false}},"id":"libvirt-{i}"}}"#
        ),
        i = i
    )
}

fn transaction(i: usize, fill: usize) -> String {
    let actions: Vec<String> = (0..=fill)
        .map(|k| {
            format!(
                concat!(
                    r#"{{"type":"blockdev-snapshot-sync","data":{{"device":"drive{k}","#,
                    r#""snapshot-file":"/snap/vm{i}-{k}.qcow2","format":"qcow2"}}}}"#
                ),
                i = i,
                k = k
            )
        })
        .collect();
    format!(
        r#"{{"execute":"transaction","arguments":{{"actions":[{}]}},"id":"libvirt-{i}"}}"#,
        actions.join(",")
    )
}

fn ovsdb_select(i: usize) -> String {
    format!(
        concat!(
            r#"{{"method":"transact","params":[{{"db":"Open_vSwitch","op":"select","#,
            r#""table":"Bridge","where":[["name","==","br{i}"]],"columns":["name","ports"]}}],"#,
            r#""id":{i}}}"#
        ),
        i = i
    )
}

fn rpc2_counter_add(i: usize) -> String {
    format!(r#"{{"jsonrpc":"2.0","method":"counter-add","params":{{"delta":{}}},"id":{i}}}"#, i % 5)
}

fn ovsdb_insert(i: usize, fill: usize) -> String {
    let ops: Vec<String> = (0..=fill)
        .map(|k| {
            format!(
                concat!(
                    r#"{{"op":"insert","table":"Interface","row":{{"name":"vif{i}.{k}","#,
                    r#""external_ids":["map",[["iface-id","port \"{k}\""],"#,
                    r#"["attached-mac","52:54:00:12:34:{k:02x}"]]]}}}}"#
                ),
                i = i,
                k = k % 256
            )
        })
        .collect();
    format!(
        r#"{{"method":"transact","params":[{{"db":"Open_vSwitch","ops":[{}]}}],"id":{i}}}"#,
        ops.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_span_the_range_and_both_halves_are_populated() {
        let all = corpus();
        assert!(all.iter().all(|m| (MIN_LEN..=MAX_LEN).contains(&m.bytes.len())));
        assert!(small().len() > 100, "small: {}", small().len());
        assert!(large().len() > 50, "large: {}", large().len());
        assert!(all.iter().any(|m| m.bytes.len() > 3 * MAX_LEN / 4));
    }

    #[test]
    fn stream_holds_whole_messages() {
        let all = corpus();
        let min_bytes = 2 * total_bytes(&all) as usize;
        let (bytes, count) = stream(&all, min_bytes);
        assert!(bytes.len() >= min_bytes);
        assert!(count > all.len());
    }
}
