//! The dialplan file format as written: serde types read with `serde-saphyr`
//! (every value that a later check may complain about keeps its position) and
//! the source of the JSON Schema (`schemars`). The doc comments on these types
//! become the schema's descriptions, so they are written for admins.
//!
//! Nothing here is validated beyond YAML structure; see `compile`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// A value with the position of its YAML node (1-based line and column, and
/// the byte range of the node in its file when known).
#[derive(Debug, Clone)]
pub(crate) struct Node<T> {
    /// The value.
    pub value: T,
    /// 1-based line, 0 when unknown.
    pub line: u64,
    /// 1-based column, 0 when unknown.
    pub column: u64,
    /// Byte range of the node in its file, when known.
    pub bytes: Option<(usize, usize)>,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Node<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
        let at = spanned.referenced;
        let span = at.span();
        let bytes = match (span.byte_offset(), span.byte_len()) {
            (Some(offset), Some(len)) => Some((offset as usize, len as usize)),
            _ => None,
        };
        Ok(Node {
            value: spanned.value,
            line: at.line(),
            column: at.column(),
            bytes,
        })
    }
}

impl<T: JsonSchema> JsonSchema for Node<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

impl<T: PartialEq> PartialEq for Node<T> {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}
impl<T: Eq> Eq for Node<T> {}
impl<T: PartialOrd> PartialOrd for Node<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        self.value.partial_cmp(&other.value)
    }
}
impl<T: Ord> Ord for Node<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.value.cmp(&other.value)
    }
}

/// A Switchboard dialplan: an ordered list of rules; the first rule whose
/// conditions all hold routes the call.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Switchboard dialplan", rename = "Dialplan")]
pub(crate) struct FileDef {
    /// IANA time zone for the `time` conditions of this file's rules, such as
    /// `Europe/Berlin`. Default: the including file's zone, else `UTC`.
    #[serde(default)]
    pub timezone: Option<Node<String>>,
    /// Named strings, used as `${name}` in patterns and values. Constants of
    /// included files join the same namespace; a name may be defined once.
    #[serde(default)]
    pub constants: BTreeMap<Node<String>, Node<String>>,
    /// The rules, in order: the first rule that matches wins. An item
    /// `{include: FILE}` splices the rules of another file at that place
    /// (path relative to this file).
    #[serde(default)]
    #[schemars(with = "Vec<RuleOrInclude>")]
    pub rules: Vec<Node<RuleDef>>,
}

/// A rule or an include (schema only).
#[allow(dead_code, clippy::large_enum_variant)]
#[derive(JsonSchema)]
#[schemars(untagged)]
enum RuleOrInclude {
    Include(IncludeDef),
    Rule(RuleDef),
}

/// Splices the rules of another dialplan file here.
#[allow(dead_code)]
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields, rename = "Include")]
struct IncludeDef {
    /// Path of the file, relative to the file that includes it.
    include: String,
}

/// One routing rule: conditions, rewrites of the call, and what to do with it.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Rule", transform = rule_required)]
pub(crate) struct RuleDef {
    /// (Include items only.)
    #[serde(default)]
    #[schemars(skip)]
    pub include: Option<Node<String>>,
    /// Unique name of the rule, shown in logs and dry runs; `${rule}` in values.
    #[serde(default)]
    pub name: Option<Node<String>>,
    /// Conditions; all must hold. Without any the rule matches every call
    /// (a catch-all, which must be the last rule).
    #[serde(default, rename = "match")]
    pub match_: Option<Node<MatchDef>>,
    /// Changes applied in order when the rule matches, before the action.
    #[serde(default)]
    pub rewrite: Vec<Node<RewriteDef>>,
    /// What to do with the call.
    #[serde(default)]
    pub action: Option<Node<ActionDef>>,
}

/// Marks `name` and `action` required and not nullable (they are optional in
/// Rust only so that a missing one is reported with the others).
fn rule_required(schema: &mut Schema) {
    schema.insert("required".into(), serde_json::json!(["name", "action"]));
    let Some(properties) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for key in ["name", "action"] {
        let Some(property) = properties.get_mut(key).and_then(|p| p.as_object_mut()) else {
            continue;
        };
        if let Some(serde_json::Value::Array(types)) = property.get_mut("type") {
            types.retain(|t| t != "null");
            if let [only] = types.as_slice() {
                let only = only.clone();
                property.insert("type".into(), only);
            }
        }
        if let Some(serde_json::Value::Array(any_of)) = property.remove("anyOf") {
            let mut kept: Vec<serde_json::Value> = any_of
                .into_iter()
                .filter(|s| s.get("type") != Some(&serde_json::json!("null")))
                .collect();
            match (kept.len(), kept.pop()) {
                (1, Some(serde_json::Value::Object(only))) => property.extend(only),
                (_, Some(last)) => {
                    kept.push(last);
                    property.insert("anyOf".into(), serde_json::Value::Array(kept));
                }
                _ => {}
            }
        }
    }
}

/// Conditions of a rule; every one that is present must hold.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Match")]
pub(crate) struct MatchDef {
    /// The called user (Request-URI user part).
    #[serde(default)]
    pub to: Option<Node<PatternDef>>,
    /// The calling user (From user part).
    #[serde(default)]
    pub from: Option<Node<PatternDef>>,
    /// The caller (a local user) is in at least one of these groups.
    #[serde(default)]
    pub caller_groups: Option<Node<Vec<Node<String>>>>,
    /// Where the call comes from; at least one must hold: `local` (a local
    /// user), `trunk` (any trunk), `trunk:NAME`, `ip:ADDRESS` or `ip:CIDR`,
    /// `transport:udp|tcp|tls|ws|wss`.
    #[serde(default)]
    pub source: Option<Node<Vec<Node<String>>>>,
    /// Days of the week and hours of the day, in the file's time zone.
    #[serde(default)]
    pub time: Option<Node<TimeDef>>,
    /// SIP headers (name case-insensitive) that must be present with a
    /// matching value.
    #[serde(default)]
    pub headers: BTreeMap<Node<String>, Node<PatternDef>>,
}

/// A pattern: an exact string, or `{regex: "..."}`.
#[derive(Debug, Clone)]
pub(crate) enum PatternDef {
    /// An exact string.
    Exact(String),
    /// A plain YAML number or boolean: its text is taken from the file as
    /// written (YAML would turn `0049` into 49).
    Verbatim,
    /// A regular expression (Rust `regex` syntax), with its position.
    Regex(Node<String>),
}

impl<'de> Deserialize<'de> for PatternDef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PatternVisitor;
        impl<'de> Visitor<'de> for PatternVisitor {
            type Value = PatternDef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or {regex: \"...\"}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PatternDef, E> {
                Ok(PatternDef::Exact(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<PatternDef, E> {
                Ok(PatternDef::Verbatim)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<PatternDef, E> {
                Ok(PatternDef::Verbatim)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<PatternDef, E> {
                Ok(PatternDef::Verbatim)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<PatternDef, E> {
                Ok(PatternDef::Verbatim)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PatternDef, A::Error> {
                let mut regex = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key != "regex" {
                        return Err(de::Error::unknown_field(&key, &["regex"]));
                    }
                    if regex.is_some() {
                        return Err(de::Error::duplicate_field("regex"));
                    }
                    regex = Some(map.next_value::<Node<String>>()?);
                }
                regex
                    .map(PatternDef::Regex)
                    .ok_or_else(|| de::Error::missing_field("regex"))
            }
        }
        deserializer.deserialize_any(PatternVisitor)
    }
}

impl JsonSchema for PatternDef {
    fn schema_name() -> Cow<'static, str> {
        "Pattern".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "An exact string, or {regex: \"...\"} (Rust regex syntax; unanchored unless you write ^ and $). Captures are available as $1..$9 and ${name}.",
            "anyOf": [
                { "type": "string" },
                {
                    "type": "object",
                    "properties": { "regex": { "type": "string" } },
                    "required": ["regex"],
                    "additionalProperties": false
                }
            ]
        })
    }
}

/// Days of the week and hours of the day (both optional).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Time")]
pub(crate) struct TimeDef {
    /// Days: `mon`..`sun`, or ranges such as `mon-fri` (ranges may wrap: `fri-mon`).
    #[serde(default)]
    pub days: Option<Vec<Node<String>>>,
    /// Hours: `HH:MM-HH:MM` (end excluded, `24:00` allowed), several separated
    /// by commas; a range may wrap midnight (`22:00-06:00`).
    #[serde(default)]
    pub hours: Option<Node<String>>,
}

/// One rewrite step; exactly one key.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
#[schemars(rename = "Rewrite")]
pub(crate) enum RewriteDef {
    /// Drop this many leading characters of the called number.
    Strip(Node<u64>),
    /// Put this in front of the called number.
    Prefix(Node<String>),
    /// Replace every match of a regex in the called number.
    Replace(ReplaceDef),
    /// Set the caller's user part and/or display name (From).
    CallerId(CallerIdDef),
    /// Add a SIP header.
    AddHeader(AddHeaderDef),
    /// Remove every SIP header of this name.
    RemoveHeader(Node<String>),
}

/// A regex replacement on the called number.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Replace")]
pub(crate) struct ReplaceDef {
    /// The regex (Rust regex syntax).
    pub regex: Node<String>,
    /// The replacement; `$1`, `${name}` are this regex's groups.
    pub with: Node<String>,
}

/// New caller identity (From header).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "CallerId")]
pub(crate) struct CallerIdDef {
    /// New From user part.
    #[serde(default)]
    pub user: Option<Node<String>>,
    /// New From display name.
    #[serde(default)]
    pub display: Option<Node<String>>,
}

/// A header to add.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "AddHeader")]
pub(crate) struct AddHeaderDef {
    /// Header name.
    pub name: Node<String>,
    /// Header value.
    pub value: Node<String>,
}

/// What to do with the call: exactly one of `user`, `trunk`, `conference`,
/// `echo`, `reject`; optionally what to do next when nobody answers or the
/// call fails.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Action", transform = one_action_kind)]
pub(crate) struct ActionDef {
    /// Ring local users.
    #[serde(default)]
    pub user: Option<Node<UserDef>>,
    /// Send the call to trunks, in order (failover).
    #[serde(default)]
    pub trunk: Option<Node<TrunkDef>>,
    /// Join a conference room.
    #[serde(default)]
    pub conference: Option<Node<ConferenceDef>>,
    /// Answer and echo the caller's audio back (`echo: {}`).
    #[serde(default, deserialize_with = "present")]
    pub echo: Option<Node<EchoDef>>,
    /// Refuse the call.
    #[serde(default)]
    pub reject: Option<Node<RejectDef>>,
    /// Next action when nobody answers in time.
    #[serde(default)]
    pub on_no_answer: Option<Box<Node<ActionDef>>>,
    /// Next action when the call fails (busy, error, every trunk failed).
    #[serde(default)]
    pub on_failure: Option<Box<Node<ActionDef>>>,
}

/// A key that is present always counts as present, even when its value is null.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

fn one_action_kind(schema: &mut Schema) {
    let kinds = ["user", "trunk", "conference", "echo", "reject"];
    let one_of: Vec<serde_json::Value> = kinds
        .iter()
        .map(|k| serde_json::json!({ "required": [k] }))
        .collect();
    schema.insert("oneOf".into(), serde_json::Value::Array(one_of));
}

/// Ring local users.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "UserAction")]
pub(crate) struct UserDef {
    /// User names (variables allowed, e.g. `$1`).
    pub users: Node<Vec<Node<String>>>,
    /// `parallel` (all at once, the default) or `sequential` (one after another).
    #[serde(default)]
    pub strategy: Strategy,
    /// Seconds to ring (per user when sequential), 1..=600; default 30.
    #[serde(default)]
    pub ring_timeout: Option<Node<u64>>,
}

/// How several users are rung.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Strategy {
    /// All at once; the first to answer takes the call.
    #[default]
    Parallel,
    /// One after another.
    Sequential,
}

/// Send the call to trunks.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "TrunkAction")]
pub(crate) struct TrunkDef {
    /// Trunk names, tried in order.
    pub trunks: Node<Vec<Node<String>>>,
    /// When to try the next trunk: status codes (`503`), classes (`5xx`) or
    /// `timeout`. Default `[408, 5xx, timeout]`.
    #[serde(default)]
    #[schemars(with = "Option<Vec<FailoverItem>>")]
    pub failover_on: Option<Vec<Node<String>>>,
}

/// One `failover_on` entry (schema only): a code, a class or `timeout`.
struct FailoverItem;

impl JsonSchema for FailoverItem {
    fn schema_name() -> Cow<'static, str> {
        "FailoverOn".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A final status code (400..=699), a class (4xx, 5xx, 6xx) or timeout.",
            "anyOf": [
                { "type": "integer", "minimum": 400, "maximum": 699 },
                { "type": "string", "pattern": "^([4-6][0-9][0-9]|[4-6]xx|timeout)$" }
            ]
        })
    }
}

/// Join a conference room.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "ConferenceAction")]
pub(crate) struct ConferenceDef {
    /// Room name (variables allowed).
    pub room: Node<String>,
}

/// Echo test: no options.
#[derive(Debug, Default, JsonSchema)]
#[schemars(rename = "EchoAction", deny_unknown_fields)]
pub(crate) struct EchoDef {}

impl<'de> Deserialize<'de> for EchoDef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EchoVisitor;
        impl<'de> Visitor<'de> for EchoVisitor {
            type Value = EchoDef;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("{} (echo has no options)")
            }
            fn visit_unit<E: de::Error>(self) -> Result<EchoDef, E> {
                Ok(EchoDef {})
            }
            fn visit_none<E: de::Error>(self) -> Result<EchoDef, E> {
                Ok(EchoDef {})
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<EchoDef, A::Error> {
                match map.next_key::<String>()? {
                    Some(key) => Err(de::Error::unknown_field(&key, &[])),
                    None => Ok(EchoDef {}),
                }
            }
        }
        deserializer.deserialize_any(EchoVisitor)
    }
}

/// Refuse the call.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "RejectAction")]
pub(crate) struct RejectDef {
    /// SIP status code, 400..=699.
    pub code: Node<u16>,
    /// Reason phrase; default: the standard phrase of the code.
    #[serde(default)]
    pub reason: Option<Node<String>>,
}
