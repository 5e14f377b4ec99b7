//! Introspection over real sockets: `query-qmp-schema` in QEMU's SchemaInfo form (every
//! command listed once, `allow-oob` as `query-commands` says, every referenced type present,
//! libvirt-style path queries resolving) and JSON-RPC 2.0 `rpc.discover` (OpenRPC) from the
//! same registry.

use std::collections::HashMap;

use serde_json::{Value, json};
use tests::{Client, start_jsonrpc_server, start_server};

/// The schema list by name, checking names are unique.
fn by_name(schema: &Value) -> HashMap<String, Value> {
    let entries = schema.as_array().expect("a list");
    let map: HashMap<String, Value> = entries
        .iter()
        .map(|e| (e["name"].as_str().expect("a name").to_owned(), e.clone()))
        .collect();
    assert_eq!(map.len(), entries.len(), "names are unique");
    map
}

/// Every type name an entry refers to.
fn references(entry: &Value) -> Vec<String> {
    let mut names = Vec::new();
    for key in ["arg-type", "ret-type", "element-type"] {
        if let Some(name) = entry[key].as_str() {
            names.push(name.to_owned());
        }
    }
    for member in entry["members"].as_array().into_iter().flatten() {
        if let Some(name) = member["type"].as_str() {
            names.push(name.to_owned());
        }
    }
    names
}

/// libvirt's `virQEMUQAPISchemaPathGet`, in small: `COMMAND/arg-type|ret-type/MEMBER/...`,
/// arrays traversed transparently, `^VALUE` checks an enum value, `!META` a meta-type.
fn resolve<'a>(schema: &'a HashMap<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('/');
    let mut entry = schema.get(parts.next()?)?;
    for part in parts {
        while entry["meta-type"] == "array" {
            entry = schema.get(entry["element-type"].as_str()?)?;
        }
        if let Some(value) = part.strip_prefix('^') {
            let values = entry["values"].as_array()?;
            values.iter().any(|v| v == value).then_some(())?;
        } else if let Some(meta) = part.strip_prefix('!') {
            (entry["meta-type"] == meta).then_some(())?;
        } else if part == "arg-type" || part == "ret-type" {
            entry = schema.get(entry[part].as_str()?)?;
        } else {
            let members = entry["members"].as_array()?;
            let member = members.iter().find(|m| m["name"] == part)?;
            entry = schema.get(member["type"].as_str()?)?;
        }
    }
    Some(entry)
}

#[test]
fn query_qmp_schema_lists_every_command_with_its_types() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    let reply = client.request(r#"{"execute":"query-qmp-schema","id":1}"#);
    assert_eq!(reply["id"], 1);
    let schema = by_name(&reply["return"]);
    let commands = client.request(r#"{"execute":"query-commands"}"#)["return"].clone();
    let commands = commands.as_array().unwrap();
    let listed: Vec<&Value> = reply["return"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["meta-type"] == "command")
        .collect();
    assert_eq!(listed.len(), commands.len(), "one entry per command, qmp_capabilities included");
    for command in commands {
        let entry = &schema[command["name"].as_str().unwrap()];
        assert_eq!(entry["meta-type"], "command");
        // QEMU writes `allow-oob` only when true.
        let expected = if command["allow-oob"] == true { Some(&Value::Bool(true)) } else { None };
        assert_eq!(entry.get("allow-oob"), expected, "{entry}");
        let mut keys: Vec<&str> = entry.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = vec!["arg-type", "meta-type", "name", "ret-type"];
        if expected.is_some() {
            want.insert(0, "allow-oob");
        }
        assert_eq!(keys, want);
    }
    for entry in schema.values() {
        for name in references(entry) {
            assert!(schema.contains_key(&name), "{name}, used by {entry}, is listed");
        }
    }
    let event = &schema["SHUTDOWN"];
    assert_eq!(event["meta-type"], "event");
    assert_eq!(
        schema[event["arg-type"].as_str().unwrap()]["members"],
        json!([{"name": "guest", "type": "bool"}, {"name": "reason", "type": "str"}])
    );
    assert_eq!(schema["int"], json!({"name": "int", "meta-type": "builtin", "json-type": "int"}));
}

#[test]
fn libvirt_style_path_queries_resolve() {
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    let reply = client.request(r#"{"execute":"query-qmp-schema"}"#);
    let schema = by_name(&reply["return"]);
    assert_eq!(resolve(&schema, "query-version/ret-type/qemu/major").unwrap()["name"], "int");
    assert_eq!(resolve(&schema, "query-version/ret-type/package").unwrap()["name"], "str");
    assert_eq!(resolve(&schema, "counter-add/arg-type/delta").unwrap()["name"], "int");
    assert!(resolve(&schema, "qmp_capabilities/arg-type/enable/^oob").is_some());
    assert!(resolve(&schema, "qmp_capabilities/arg-type/enable/^bogus").is_none());
    assert!(resolve(&schema, "query-commands/ret-type/allow-oob/!builtin").is_some());
    assert!(resolve(&schema, "counter-add/arg-type/nope").is_none());
    let stall = resolve(&schema, "stall/arg-type").unwrap();
    assert_eq!(
        stall["members"],
        json!([{"name": "timeout-ms", "default": null, "type": "int"}]),
        "an optional member carries QEMU's absent marker"
    );
}

#[test]
fn the_schema_is_the_same_on_every_server() {
    let fetch = || {
        let server = start_server();
        let mut client = Client::negotiated(&server.addr);
        client.request(r#"{"execute":"query-qmp-schema"}"#)["return"].clone()
    };
    assert_eq!(fetch(), fetch());
}

#[test]
fn rpc_discover_describes_every_method_in_openrpc() {
    let server = start_jsonrpc_server();
    let mut client = Client::jsonrpc(&server.addr);
    let reply = client.request(r#"{"jsonrpc":"2.0","id":7,"method":"rpc.discover"}"#);
    assert_eq!(reply["id"], 7);
    let doc = &reply["result"];
    assert_eq!(doc["openrpc"], "1.3.2");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let methods = doc["methods"].as_array().unwrap();
    let names: Vec<&str> = methods.iter().map(|m| m["name"].as_str().unwrap()).collect();
    let expected = [
        "cluster-remove-member",
        "counter-add",
        "emit-event",
        "ping",
        "query-cluster",
        "query-commands",
        "query-counter",
        "query-qmp-schema",
        "query-stats",
        "query-version",
        "quit",
        "release",
        "stall",
        "work",
    ];
    assert_eq!(names, expected);
    let add = &methods[1];
    assert_eq!(add["paramStructure"], "by-name");
    assert_eq!(add["params"][0]["name"], "delta");
    assert_eq!(add["params"][0]["required"], true);
    assert_eq!(add["params"][0]["schema"]["type"], "integer");
    assert_eq!(add["result"]["schema"]["properties"]["value"]["type"], "integer");
    let oob: Vec<&str> = methods
        .iter()
        .filter(|m| m["x-allow-oob"] == true)
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(oob, ["ping", "query-cluster", "query-counter", "query-stats", "release"]);
    let text = doc.to_string();
    let components = doc["components"]["schemas"].as_object().unwrap();
    for target in text.split(r##""$ref":"#/components/schemas/"##).skip(1) {
        let name = &target[..target.find('"').unwrap()];
        assert!(components.contains_key(name), "reference to {name} resolves");
    }
    // OVS 1.0 form gets the same document.
    let old = client.request(r#"{"id":8,"method":"rpc.discover","params":[]}"#);
    assert_eq!(&old["result"], doc);
}
