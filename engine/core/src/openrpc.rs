//! JSON-RPC introspection: the `rpc.discover` reply, an [OpenRPC](https://spec.open-rpc.org)
//! 1.3 document built from the same recorded schemas as `query-qmp-schema`.
//!
//! Each registered command is a method whose parameters are the members of its argument
//! object, by name (JSON-RPC 2.0 `params` as an object; OVS-style `[{...}]` carries the same
//! members), and whose result is its return type's JSON Schema. Named types go to
//! `components.schemas`, every reference rewritten to point there. Allow-oob methods carry
//! the extension `x-allow-oob: true`: they run on the parser thread and their replies may
//! overtake in-band ones.
//!
//! Runs once at start-up; never on the request path.

use schemars::{JsonSchema, Schema};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::introspect::Schemas;

/// The OpenRPC version the document follows.
const OPENRPC_VERSION: &str = "1.3.2";

/// The discovery method's own name (OpenRPC's service discovery method).
pub const DISCOVER: &str = "rpc.discover";

/// An OpenRPC document, as `rpc.discover` returns it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct OpenRpc(Value);

impl OpenRpc {
    /// The document as JSON.
    pub fn as_value(&self) -> &Value {
        &self.0
    }
}

impl JsonSchema for OpenRpc {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OpenRpc".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "type": "object",
            "properties": {
                "openrpc": { "type": "string" },
                "info": { "type": "object", "additionalProperties": true },
                "methods": { "type": "array", "items": { "type": "object", "additionalProperties": true } },
                "components": { "type": "object", "additionalProperties": true }
            },
            "required": ["openrpc", "info", "methods"]
        })
    }
}

/// Builds the document: `info` from the server's package text, methods sorted by name (the
/// discovery method itself left out, as it describes the others).
pub(crate) fn document(schemas: &Schemas, title: &str, version: &str) -> OpenRpc {
    let mut components = Map::new();
    let mut methods = Vec::new();
    for command in schemas.sorted_commands() {
        if command.name == DISCOVER {
            continue;
        }
        let args = hoist(&command.args, &mut components);
        let ret = hoist(&command.ret, &mut components);
        let mut method = json!({
            "name": command.name,
            "paramStructure": "by-name",
            "params": params(&args, &components),
            "result": { "name": format!("{}-result", command.name), "schema": ret },
        });
        if command.allow_oob {
            method["x-allow-oob"] = true.into();
        }
        methods.push(method);
    }
    OpenRpc(json!({
        "openrpc": OPENRPC_VERSION,
        "info": { "title": title, "version": version },
        "methods": methods,
        "components": { "schemas": components },
    }))
}

/// One content descriptor per member of the argument object.
fn params(args: &Value, components: &Map<String, Value>) -> Vec<Value> {
    let object = match args.get("$ref").and_then(Value::as_str) {
        Some(target) => target
            .strip_prefix("#/components/schemas/")
            .and_then(|name| components.get(name))
            .unwrap_or(args),
        None => args,
    };
    let required: Vec<&Value> =
        object.get("required").and_then(Value::as_array).into_iter().flatten().collect();
    let Some(properties) = object.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, schema)| {
            let required = required.contains(&&Value::String(name.clone()));
            json!({ "name": name, "required": required, "schema": schema })
        })
        .collect()
}

/// Moves a root schema's `$defs` into `components` (renaming a definition whose name is
/// taken by a different one) and returns the root with references rewritten to match.
fn hoist(root: &Value, components: &mut Map<String, Value>) -> Value {
    let mut root = root.clone();
    let defs = root.as_object_mut().and_then(|o| o.remove("$defs"));
    if let Some(object) = root.as_object_mut() {
        object.remove("$schema");
    }
    let mut renames: Vec<(String, String)> = Vec::new();
    let defs = match defs {
        Some(Value::Object(defs)) => defs,
        _ => Map::new(),
    };
    for (name, def) in &defs {
        let mut chosen = name.clone();
        let mut n = 2;
        while components.get(&chosen).is_some_and(|existing| existing != def) {
            chosen = format!("{name}{n}");
            n += 1;
        }
        renames.push((name.clone(), chosen));
    }
    for ((_, chosen), (_, def)) in renames.iter().zip(defs) {
        let mut def = def;
        rewrite_refs(&mut def, &renames);
        components.insert(chosen.clone(), def);
    }
    rewrite_refs(&mut root, &renames);
    root
}

/// Points every `#/$defs/X` reference at `#/components/schemas/<renamed X>`.
fn rewrite_refs(value: &mut Value, renames: &[(String, String)]) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(target)) = object.get_mut("$ref")
                && let Some(name) = target.strip_prefix("#/$defs/")
            {
                let chosen = renames.iter().find(|(from, _)| from == name).map_or(name, |r| &r.1);
                *target = format!("#/components/schemas/{chosen}");
            }
            object.values_mut().for_each(|v| rewrite_refs(v, renames));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(v, renames)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, JsonSchema)]
    #[allow(dead_code, reason = "only the schema is used")]
    struct Args {
        delta: i64,
        note: Option<Inner>,
    }

    #[derive(serde::Deserialize, Serialize, JsonSchema)]
    #[allow(dead_code, reason = "only the schema is used")]
    struct Inner {
        text: String,
    }

    #[test]
    fn methods_carry_params_by_name_and_result_schemas_with_hoisted_refs() {
        let mut schemas = Schemas::default();
        schemas.command::<Args, Inner>("add", true);
        schemas.command::<crate::NoArgs, crate::Empty>(DISCOVER, false);
        let doc = document(&schemas, "engine", "0.1.0").0;
        assert_eq!(doc["openrpc"], OPENRPC_VERSION);
        assert_eq!(doc["info"], json!({"title": "engine", "version": "0.1.0"}));
        let methods = doc["methods"].as_array().unwrap();
        assert_eq!(methods.len(), 1, "the discovery method describes the others");
        let add = &methods[0];
        assert_eq!(add["x-allow-oob"], true);
        let params = add["params"].as_array().unwrap();
        assert_eq!(params[0]["name"], "delta");
        assert_eq!(params[0]["required"], true);
        assert_eq!(params[0]["schema"]["type"], "integer");
        assert_eq!(params[1]["name"], "note");
        assert_eq!(params[1]["required"], false);
        let text = doc.to_string();
        assert!(!text.contains("#/$defs/"), "every reference points into components: {text}");
        assert_eq!(doc["components"]["schemas"]["Inner"]["properties"]["text"]["type"], "string");
        assert_eq!(add["result"]["schema"]["properties"]["text"]["type"], "string");
    }
}
