//! QMP introspection: the `query-qmp-schema` reply, in QEMU's `SchemaInfo` form
//! (`qapi/introspect.json`), generated from what the [`Registry`](crate::Registry) recorded
//! about each command and event.
//!
//! Argument, return and event data types describe themselves through `schemars`'
//! `JsonSchema` derive. At registration the registry keeps each type's JSON Schema
//! ([`Schemas`]); when the server starts, [`schema_info`] maps those schemas onto SchemaInfo
//! once: objects (members with `name`, `type`, and `"default": null` marking an optional
//! member, as QEMU does), arrays (named `[ELEMENT]`), string enums, alternates (`anyOf`,
//! nullable values) and the builtins `str`, `int`, `number`, `bool`, `null`, `any`. Like
//! QEMU, every integer width maps to `int` (QEMU's introspection folds `uint64`, `int8`, ...
//! into `int`), and non-builtin types get opaque numeric names ("0", "1", ...) so that
//! clients match commands and members, never type names. Numbering is deterministic: commands
//! are walked by name, then events by name, each type numbered when first met, and two
//! structurally equal types share one name (every argument-less command shares one
//! `arg-type`, the empty object, as in QEMU).
//!
//! Runs once at start-up; never on the request path.

use std::collections::HashMap;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// Deepest type nesting followed; deeper (only a recursive type gets there) is `any`.
const MAX_DEPTH: usize = 64;

/// One entry of `query-qmp-schema`: a command, an event or a type, in QEMU's `SchemaInfo`
/// shape (`name`, `meta-type`, and the members of that meta-type).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(transparent)]
pub struct SchemaInfo(Map<String, Value>);

impl SchemaInfo {
    /// The entity's name: a command or event name, a builtin (`int`), or an opaque number.
    pub fn name(&self) -> &str {
        self.0.get("name").and_then(Value::as_str).unwrap_or_default()
    }

    /// `command`, `event`, `object`, `array`, `enum`, `alternate` or `builtin`.
    pub fn meta_type(&self) -> &str {
        self.0.get("meta-type").and_then(Value::as_str).unwrap_or_default()
    }

    /// A member such as `arg-type`, `members` or `allow-oob`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }
}

impl JsonSchema for SchemaInfo {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SchemaInfo".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> Schema {
        // The common base of QEMU's SchemaInfo union; the members of each meta-type follow.
        schemars::json_schema!({
            "type": "object",
            "properties": {
                "name": { "type": "string" },
                "meta-type": {
                    "type": "string",
                    "enum": ["builtin", "enum", "array", "object", "alternate", "command", "event"]
                }
            },
            "required": ["name", "meta-type"]
        })
    }
}

/// A command's recorded schemas.
#[derive(Debug)]
pub(crate) struct CommandSchema {
    pub(crate) name: String,
    pub(crate) allow_oob: bool,
    /// JSON Schema of the arguments as they are deserialised.
    pub(crate) args: Value,
    /// JSON Schema of the result as it is serialised.
    pub(crate) ret: Value,
}

/// An event's recorded schema.
#[derive(Debug)]
pub(crate) struct EventSchema {
    pub(crate) name: String,
    /// JSON Schema of the `data` member.
    pub(crate) data: Value,
}

/// What the registry records for introspection, filled in as commands are registered.
#[derive(Debug, Default)]
pub(crate) struct Schemas {
    pub(crate) commands: Vec<CommandSchema>,
    pub(crate) events: Vec<EventSchema>,
}

impl Schemas {
    /// Records a command's argument and result types.
    pub(crate) fn command<A: JsonSchema, R: JsonSchema>(&mut self, name: &str, allow_oob: bool) {
        let args = SchemaSettings::draft2020_12().for_deserialize();
        let ret = SchemaSettings::draft2020_12().for_serialize();
        self.commands.push(CommandSchema {
            name: name.to_owned(),
            allow_oob,
            args: args.into_generator().into_root_schema_for::<A>().to_value(),
            ret: ret.into_generator().into_root_schema_for::<R>().to_value(),
        });
    }

    /// Records an event's data type.
    pub(crate) fn event<T: JsonSchema>(&mut self, name: &str) {
        let data = SchemaSettings::draft2020_12().for_serialize();
        self.events.push(EventSchema {
            name: name.to_owned(),
            data: data.into_generator().into_root_schema_for::<T>().to_value(),
        });
    }

    /// The commands sorted by name, `qmp_capabilities` (the session command every QMP
    /// server answers) included.
    pub(crate) fn sorted_commands(&self) -> Vec<&CommandSchema> {
        let mut commands: Vec<&CommandSchema> = self.commands.iter().collect();
        commands.sort_by(|a, b| a.name.cmp(&b.name));
        commands
    }
}

/// `qmp_capabilities`' arguments as QEMU declares them: `{ '*enable': [ 'QMPCapability' ] }`.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code, reason = "only its schema is used; the dialect decodes its own copy")]
struct CapabilitiesArgs {
    enable: Option<Vec<QmpCapability>>,
}

/// QEMU's `QMPCapability` enum, of which the engine supports the one member.
#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum QmpCapability {
    Oob,
}

/// Builds the whole `query-qmp-schema` list: commands by name, then events by name, then
/// every type they use, in the order first met.
pub(crate) fn schema_info(schemas: &Schemas) -> Vec<SchemaInfo> {
    let capabilities = CommandSchema {
        name: ooblane_wire::qmp::CAPABILITIES.to_owned(),
        allow_oob: false,
        args: schemars::schema_for!(CapabilitiesArgs).to_value(),
        ret: schemars::schema_for!(ooblane_wire::Empty).to_value(),
    };
    let mut commands = schemas.sorted_commands();
    commands.push(&capabilities);
    commands.sort_by(|a, b| a.name.cmp(&b.name));
    let mut events: Vec<&EventSchema> = schemas.events.iter().collect();
    events.sort_by(|a, b| a.name.cmp(&b.name));

    let mut types = TypeTable::default();
    let mut out = Vec::with_capacity(commands.len() + events.len());
    for command in commands {
        let mut entry = Map::new();
        entry.insert("name".into(), command.name.clone().into());
        entry.insert("meta-type".into(), "command".into());
        entry.insert("arg-type".into(), types.name_of(&command.args).into());
        entry.insert("ret-type".into(), types.name_of(&command.ret).into());
        // QEMU omits `allow-oob` when false (introspect.py writes it only when set).
        if command.allow_oob {
            entry.insert("allow-oob".into(), true.into());
        }
        out.push(SchemaInfo(entry));
    }
    for event in events {
        let mut entry = Map::new();
        entry.insert("name".into(), event.name.clone().into());
        entry.insert("meta-type".into(), "event".into());
        entry.insert("arg-type".into(), types.name_of(&event.data).into());
        out.push(SchemaInfo(entry));
    }
    out.extend(types.entries);
    out
}

/// The SchemaInfo types met so far, each under its name.
#[derive(Default)]
struct TypeTable {
    entries: Vec<SchemaInfo>,
    /// A type's entry without its name, as JSON text, to its name: equal shapes share one.
    by_shape: HashMap<String, String>,
    /// Opaque names handed out so far.
    numbered: usize,
}

impl TypeTable {
    /// The name of the type a root schema (with its own `$defs`) describes.
    fn name_of(&mut self, root: &Value) -> String {
        self.walk(root, root, 0)
    }

    fn walk(&mut self, schema: &Value, root: &Value, depth: usize) -> String {
        if depth > MAX_DEPTH {
            return self.builtin("any");
        }
        let Some(object) = schema.as_object() else {
            return self.builtin("any"); // `true`: anything
        };
        if let Some(target) = object.get("$ref").and_then(Value::as_str) {
            let resolved = target.strip_prefix('#').and_then(|p| root.pointer(p));
            return match resolved {
                Some(resolved) => self.walk(resolved, root, depth + 1),
                None => self.builtin("any"),
            };
        }
        if let Some(values) = string_enum(object, root) {
            return self.enumeration(values);
        }
        if let Some(options) = object.get("anyOf").or_else(|| object.get("oneOf")) {
            let options: Vec<&Value> = options.as_array().into_iter().flatten().collect();
            return self.alternate(&options, root, depth);
        }
        if let Some([only]) = object.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
            return self.walk(only, root, depth + 1);
        }
        match object.get("type") {
            Some(Value::String(kind)) => self.typed(kind, object, root, depth),
            Some(Value::Array(kinds)) => {
                // `"type": ["integer", "null"]`: each kind as its own option.
                let options: Vec<Value> = kinds
                    .iter()
                    .map(|kind| {
                        let mut single = object.clone();
                        single.insert("type".into(), kind.clone());
                        Value::Object(single)
                    })
                    .collect();
                let options: Vec<&Value> = options.iter().collect();
                self.alternate(&options, root, depth)
            }
            _ => self.builtin("any"),
        }
    }

    /// A schema with a single `type`.
    fn typed(
        &mut self,
        kind: &str,
        object: &Map<String, Value>,
        root: &Value,
        depth: usize,
    ) -> String {
        match kind {
            "string" => self.builtin("str"),
            "integer" => self.builtin("int"),
            "number" => self.builtin("number"),
            "boolean" => self.builtin("bool"),
            "null" => self.builtin("null"),
            "array" => match object.get("items") {
                Some(items) => {
                    let element = self.walk(items, root, depth + 1);
                    self.array(element)
                }
                None => self.builtin("any"),
            },
            "object" => self.object(object, root, depth),
            _ => self.builtin("any"),
        }
    }

    /// A struct becomes an object type; a map (open `additionalProperties`) has no
    /// SchemaInfo form and is `any`, as QEMU's free-form dictionaries are.
    fn object(&mut self, object: &Map<String, Value>, root: &Value, depth: usize) -> String {
        let open =
            object.get("additionalProperties").is_some_and(|extra| extra != &Value::Bool(false));
        let properties = object.get("properties").and_then(Value::as_object);
        if open && properties.is_none_or(Map::is_empty) {
            return self.builtin("any");
        }
        let required: Vec<&str> = object
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let mut members = Vec::new();
        for (name, schema) in properties.into_iter().flatten() {
            let optional = !required.contains(&name.as_str());
            // An optional member is absent rather than null: QEMU has no nullable optional.
            let schema = if optional { without_null(schema) } else { schema.clone() };
            let mut member = Map::new();
            member.insert("name".into(), name.clone().into());
            if optional {
                member.insert("default".into(), Value::Null);
            }
            member.insert("type".into(), self.walk(&schema, root, depth + 1).into());
            members.push(Value::Object(member));
        }
        self.named(json!({ "meta-type": "object", "members": members }))
    }

    fn alternate(&mut self, options: &[&Value], root: &Value, depth: usize) -> String {
        let mut names: Vec<String> = Vec::new();
        for option in options {
            let name = self.walk(option, root, depth + 1);
            if !names.contains(&name) {
                names.push(name);
            }
        }
        match names.as_slice() {
            [] => self.builtin("any"),
            [only] => only.clone(),
            _ => {
                let members: Vec<Value> = names.iter().map(|n| json!({ "type": n })).collect();
                self.named(json!({ "meta-type": "alternate", "members": members }))
            }
        }
    }

    fn enumeration(&mut self, values: Vec<String>) -> String {
        let members: Vec<Value> = values.iter().map(|v| json!({ "name": v })).collect();
        // QEMU 7.2 sends both `members` and the older `values`.
        self.named(json!({ "meta-type": "enum", "members": members, "values": values }))
    }

    fn array(&mut self, element: String) -> String {
        let name = format!("[{element}]");
        let entry = json!({ "meta-type": "array", "element-type": element });
        self.insert_as(name, entry)
    }

    /// A builtin keeps its own name, as in QEMU.
    fn builtin(&mut self, name: &'static str) -> String {
        let json_type = match name {
            "str" => "string",
            "bool" => "boolean",
            "any" => "value",
            other => other, // int, number, null
        };
        self.insert_as(name.to_owned(), json!({ "meta-type": "builtin", "json-type": json_type }))
    }

    /// A type with an opaque numeric name: the next number, unless an equal one exists.
    fn named(&mut self, entry: Value) -> String {
        let shape = entry.to_string();
        if let Some(name) = self.by_shape.get(&shape) {
            return name.clone();
        }
        let name = self.numbered.to_string();
        self.numbered += 1;
        self.insert_as(name, entry)
    }

    fn insert_as(&mut self, name: String, entry: Value) -> String {
        let shape = entry.to_string();
        if self.by_shape.contains_key(&shape) {
            return name;
        }
        self.by_shape.insert(shape, name.clone());
        let Value::Object(fields) = entry else { unreachable!("entries are objects") };
        let mut named = Map::new();
        named.insert("name".into(), name.clone().into());
        named.extend(fields);
        self.entries.push(SchemaInfo(named));
        name
    }
}

/// The values of a string enum: `enum: [..]`, a `const`, or `oneOf`/`anyOf` of those
/// (serde's unit variants with doc comments).
fn string_enum(object: &Map<String, Value>, root: &Value) -> Option<Vec<String>> {
    let strings = |values: &Vec<Value>| -> Option<Vec<String>> {
        values.iter().map(|v| v.as_str().map(str::to_owned)).collect()
    };
    if let Some(values) = object.get("enum").and_then(Value::as_array) {
        return strings(values);
    }
    if let Some(value) = object.get("const").and_then(Value::as_str) {
        return Some(vec![value.to_owned()]);
    }
    let options = object.get("oneOf").or_else(|| object.get("anyOf"))?.as_array()?;
    let mut all = Vec::new();
    for option in options {
        let mut option = option.as_object()?;
        if let Some(target) = option.get("$ref").and_then(Value::as_str) {
            option = target.strip_prefix('#').and_then(|p| root.pointer(p))?.as_object()?;
        }
        all.extend(string_enum(option, root)?);
    }
    (!all.is_empty()).then_some(all)
}

/// The schema with `null` taken out of its type or its options.
fn without_null(schema: &Value) -> Value {
    let is_null = |s: &Value| s.get("type").and_then(Value::as_str) == Some("null");
    let mut schema = schema.clone();
    let Some(object) = schema.as_object_mut() else { return schema };
    if let Some(Value::Array(kinds)) = object.get_mut("type") {
        kinds.retain(|k| k != "null");
        if let [only] = kinds.as_slice() {
            let only = only.clone();
            object.insert("type".into(), only);
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(options)) = object.get_mut(key) {
            options.retain(|o| !is_null(o));
            if let [only] = options.as_slice() {
                let only = only.clone();
                object.remove(key);
                if let Value::Object(fields) = only {
                    object.extend(fields);
                }
            }
        }
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Serialize, JsonSchema)]
    #[serde(rename_all = "kebab-case")]
    #[allow(dead_code, reason = "only the schema is used")]
    struct Args {
        count: u32,
        timeout_ms: Option<u64>,
        mode: Mode,
        tags: Vec<String>,
    }

    #[derive(Deserialize, Serialize, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code, reason = "only the schema is used")]
    enum Mode {
        Fast,
        Slow,
    }

    #[derive(Serialize, JsonSchema)]
    struct Reply {
        busy: Option<f64>,
        ok: bool,
    }

    fn entries(schemas: &Schemas) -> HashMap<String, Value> {
        let list = schema_info(schemas);
        list.iter().map(|e| (e.name().to_owned(), serde_json::to_value(e).unwrap())).collect()
    }

    #[test]
    fn a_command_maps_to_qemu_shapes() {
        let mut schemas = Schemas::default();
        schemas.command::<Args, Reply>("go", true);
        let all = entries(&schemas);
        let command = &all["go"];
        assert_eq!(command["meta-type"], "command");
        assert_eq!(command["allow-oob"], true);
        let args = &all[command["arg-type"].as_str().unwrap()];
        let members = args["members"].as_array().unwrap();
        let mode = all[members[1]["type"].as_str().unwrap()].clone();
        assert_eq!(
            members,
            &vec![
                json!({"name": "count", "type": "int"}),
                json!({"name": "mode", "type": members[1]["type"]}),
                json!({"name": "tags", "type": "[str]"}),
                json!({"name": "timeout-ms", "default": null, "type": "int"}),
            ]
        );
        assert_eq!(mode["meta-type"], "enum");
        assert_eq!(mode["values"], json!(["fast", "slow"]));
        assert_eq!(mode["members"], json!([{"name": "fast"}, {"name": "slow"}]));
        assert_eq!(
            all["[str]"],
            json!({"name": "[str]", "meta-type": "array", "element-type": "str"})
        );
        assert_eq!(all["int"], json!({"name": "int", "meta-type": "builtin", "json-type": "int"}));
        let ret = &all[command["ret-type"].as_str().unwrap()];
        let busy = &all[ret["members"][0]["type"].as_str().unwrap()];
        assert_eq!(busy["meta-type"], "alternate");
        assert_eq!(busy["members"], json!([{"type": "number"}, {"type": "null"}]));
    }

    #[test]
    fn allow_oob_is_omitted_when_false_and_empty_objects_share_a_name() {
        let mut schemas = Schemas::default();
        schemas.command::<crate::NoArgs, crate::Empty>("b", false);
        schemas.command::<crate::NoArgs, crate::Empty>("a", false);
        let list = schema_info(&schemas);
        let names: Vec<&str> = list.iter().map(SchemaInfo::name).collect();
        assert_eq!(names[..3], ["a", "b", "qmp_capabilities"]);
        for command in &list[..2] {
            assert_eq!(command.get("allow-oob"), None);
            assert_eq!(command.get("arg-type"), command.get("ret-type"));
        }
        let empty = list.iter().find(|e| Some(&Value::from(e.name())) == list[0].get("arg-type"));
        assert_eq!(serde_json::to_value(empty.unwrap()).unwrap()["members"], json!([]));
    }

    #[test]
    fn the_mapping_is_deterministic() {
        let build = || {
            let mut schemas = Schemas::default();
            schemas.command::<Args, Reply>("z", false);
            schemas.command::<crate::NoArgs, Reply>("y", false);
            schemas.event::<Reply>("E");
            serde_json::to_string(&schema_info(&schemas)).unwrap()
        };
        assert_eq!(build(), build());
    }
}
