//! Deterministic answers: the content hash, generated words, the `$sim_reply`,
//! `$sim_replies` and `$sim_schema` markers, and filling a JSON schema.

use fastrand::Rng;
use serde_json::{Map, Value, json};

/// The words answers are made of.
const VOCABULARY: [&str; 64] = [
    "agent", "answer", "batch", "budget", "cache", "capacity", "check", "clear", "context", "cost",
    "data", "deadline", "detail", "draft", "event", "fact", "field", "graph", "input", "issue",
    "job", "key", "limit", "log", "model", "note", "output", "plan", "point", "queue", "range",
    "reason", "record", "report", "request", "result", "review", "risk", "route", "rule", "sample",
    "scope", "signal", "source", "state", "step", "store", "summary", "system", "table", "target",
    "task", "term", "test", "text", "time", "token", "trace", "value", "version", "view", "window",
    "work", "yield",
];

/// Characters per piece when a JSON answer is streamed.
const JSON_PIECE_CHARS: usize = 4;
/// How deep a schema is filled; deeper levels are answered `null`.
const SCHEMA_DEPTH_MAX: u32 = 8;
/// The most items a filled array gets.
const SCHEMA_ITEMS_MAX: u64 = 8;
/// The longest string a filled `minLength` asks for.
const SCHEMA_STRING_MAX: u64 = 1024;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// One message of a request, normalised across providers (the system prompt is a message
/// with role `system`).
#[derive(Debug, Clone)]
pub(super) struct Message {
    pub(super) role: String,
    pub(super) text: String,
}

/// What the request asked the answer to look like.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Shape {
    Text,
    JsonObject,
    JsonSchema(Value),
}

/// A stable hash (FNV-1a, which unlike std's hasher is fixed across Rust releases) of
/// everything the answer depends on.
pub(super) fn request_hash(seed: u64, name: &str, messages: &[Message]) -> u64 {
    let mut hash = FNV_OFFSET;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
    };
    feed(&seed.to_le_bytes());
    feed(name.as_bytes());
    for message in messages {
        feed(&[0xff]);
        feed(message.role.as_bytes());
        feed(&[0]);
        feed(message.text.as_bytes());
    }
    hash
}

/// Prompt tokens: characters / 4, rounded up.
pub(super) fn prompt_tokens(messages: &[Message]) -> u32 {
    let chars: usize = messages.iter().map(|m| m.text.chars().count()).sum();
    u32::try_from(chars.div_ceil(4)).unwrap_or(u32::MAX)
}

pub(super) fn last_user(messages: &[Message]) -> &str {
    messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map_or("", |m| m.text.as_str())
}

/// A `"$sim_replies": [first, second, ...]` script in the last user message: the replies,
/// and a hash of them that tells one script from another (so each keeps its own count).
pub(super) fn replies(messages: &[Message]) -> Option<(Vec<Value>, u64)> {
    match marker(last_user(messages), "$sim_replies")? {
        Value::Array(replies) if !replies.is_empty() => {
            let text = Value::Array(replies.clone()).to_string();
            let mut hash = FNV_OFFSET;
            for byte in text.as_bytes() {
                hash ^= u64::from(*byte);
                hash = hash.wrapping_mul(FNV_PRIME);
            }
            Some((replies, hash))
        }
        _ => None,
    }
}

/// The answer's pieces, before any `max_tokens` cut. `scripted` is the reply a
/// `$sim_replies` script chose for this request; `canned` the model's fixed answer
/// ([`SimConfig::replies`](super::SimConfig::replies)), if it has one.
pub(super) fn pieces(
    rng: &mut Rng,
    tokens: (u32, u32),
    shape: &Shape,
    messages: &[Message],
    scripted: Option<Value>,
    canned: Option<&Value>,
) -> Vec<String> {
    let last_user = last_user(messages);
    if let Some(reply) = scripted
        .or_else(|| marker(last_user, "$sim_reply"))
        .or_else(|| canned.cloned())
    {
        return match reply {
            Value::String(text) => text
                .split_inclusive(char::is_whitespace)
                .map(str::to_owned)
                .collect(),
            other => json_pieces(&other),
        };
    }
    if let Shape::JsonSchema(schema) = shape {
        return json_pieces(&fill(schema, rng, 0));
    }
    if let Some(schema) = marker(last_user, "$sim_schema") {
        return json_pieces(&fill(&schema, rng, 0));
    }
    let count = rng.u32(tokens.0..=tokens.1);
    let words = words(rng, count);
    match shape {
        Shape::Text => words,
        Shape::JsonObject | Shape::JsonSchema(_) => json_pieces(&json!({ "text": words.concat() })),
    }
}

/// `count` words: the first capitalised, the others with a leading space, the last with a
/// full stop.
fn words(rng: &mut Rng, count: u32) -> Vec<String> {
    let mut words: Vec<String> = (0..count)
        .map(|i| {
            let word = VOCABULARY[rng.usize(..VOCABULARY.len())];
            if i == 0 {
                let mut chars = word.chars();
                chars
                    .next()
                    .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            } else {
                format!(" {word}")
            }
        })
        .collect();
    if let Some(last) = words.last_mut() {
        last.push('.');
    }
    words
}

fn json_pieces(value: &Value) -> Vec<String> {
    let text = value.to_string();
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(JSON_PIECE_CHARS)
        .map(|chunk| chunk.iter().collect())
        .collect()
}

/// The value under `key` of the first JSON object in `text` that has it at its top level:
/// found from the key's quoted occurrences, each preceded (after whitespace) by the `{` that
/// opens the object, so a long prompt is scanned once.
fn marker(text: &str, key: &str) -> Option<Value> {
    let quoted = format!("\"{key}\"");
    for (at, _) in text.match_indices(&quoted) {
        let before = text[..at].trim_end();
        if !before.ends_with('{') {
            continue;
        }
        let open = before.len() - 1;
        let mut values = serde_json::Deserializer::from_str(&text[open..]).into_iter::<Value>();
        if let Some(Ok(Value::Object(mut object))) = values.next()
            && let Some(value) = object.remove(key)
        {
            return Some(value);
        }
    }
    None
}

/// A deterministic value matching `schema`, as far as the rules in the module docs go.
pub(super) fn fill(schema: &Value, rng: &mut Rng, depth: u32) -> Value {
    if depth >= SCHEMA_DEPTH_MAX {
        return Value::Null;
    }
    let Value::Object(schema) = schema else {
        return json!(word(rng));
    };
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    if let Some(Value::Array(members)) = schema.get("enum")
        && !members.is_empty()
    {
        return members[rng.usize(..members.len())].clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(first) = schema
            .get(key)
            .and_then(Value::as_array)
            .and_then(|v| v.first())
        {
            return fill(first, rng, depth + 1);
        }
    }
    let kind = match schema.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|kind| *kind != "null")
            .unwrap_or("null"),
        _ if schema.contains_key("properties") => "object",
        _ if schema.contains_key("items") => "array",
        _ => "string",
    };
    match kind {
        "object" => fill_object(schema, rng, depth),
        "array" => {
            let min = schema
                .get("minItems")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .max(1);
            let max = schema
                .get("maxItems")
                .and_then(Value::as_u64)
                .unwrap_or(u64::MAX);
            let count = min.min(max).min(SCHEMA_ITEMS_MAX);
            let items = schema.get("items").cloned().unwrap_or(Value::Null);
            Value::Array((0..count).map(|_| fill(&items, rng, depth + 1)).collect())
        }
        "integer" => {
            let (min, max) = bounds(schema);
            // Bounds of an integer schema are whole in practice; casting saturates otherwise.
            json!(rng.i64(min.ceil() as i64..=max.floor().max(min.ceil()) as i64))
        }
        "number" => {
            let (min, max) = bounds(schema);
            json!(((min + rng.f64() * (max - min)) * 100.0).round() / 100.0)
        }
        "boolean" => json!(rng.bool()),
        "null" => Value::Null,
        _ => {
            let min = schema
                .get("minLength")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .min(SCHEMA_STRING_MAX);
            let mut text = word(rng).to_owned();
            while (text.len() as u64) < min {
                text.push('-');
                text.push_str(word(rng));
            }
            json!(text)
        }
    }
}

fn fill_object(schema: &Map<String, Value>, rng: &mut Rng, depth: u32) -> Value {
    let empty = Map::new();
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let names: Vec<&str> = match schema.get("required").and_then(Value::as_array) {
        Some(required) => required.iter().filter_map(Value::as_str).collect(),
        None => properties.keys().map(String::as_str).collect(),
    };
    let object = names
        .into_iter()
        .map(|name| {
            let value = match properties.get(name) {
                Some(property) => fill(property, rng, depth + 1),
                None => json!(word(rng)),
            };
            (name.to_owned(), value)
        })
        .collect();
    Value::Object(object)
}

fn bounds(schema: &Map<String, Value>) -> (f64, f64) {
    let min = schema.get("minimum").and_then(Value::as_f64).unwrap_or(0.0);
    let max = schema
        .get("maximum")
        .and_then(Value::as_f64)
        .unwrap_or(min.max(0.0) + 100.0);
    (min, max.max(min))
}

fn word(rng: &mut Rng) -> &'static str {
    VOCABULARY[rng.usize(..VOCABULARY.len())]
}

/// The text of a message's content: a string, or the `text` of each part (block), joined.
pub(super) fn text_of(content: &Value) -> String {
    match content {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> Vec<Message> {
        vec![Message {
            role: "user".into(),
            text: text.into(),
        }]
    }

    #[test]
    fn text_is_words_within_the_range() {
        let pieces = pieces(
            &mut Rng::with_seed(1),
            (5, 5),
            &Shape::Text,
            &user("hi"),
            None,
            None,
        );
        assert_eq!(pieces.len(), 5);
        assert!(pieces[0].chars().next().unwrap().is_uppercase());
        assert!(pieces[1].starts_with(' '));
        assert!(pieces[4].ends_with('.'));
    }

    #[test]
    fn the_hash_depends_on_every_input() {
        let a = request_hash(1, "sim", &user("hi"));
        assert_eq!(a, request_hash(1, "sim", &user("hi")));
        assert_ne!(a, request_hash(2, "sim", &user("hi")));
        assert_ne!(a, request_hash(1, "other", &user("hi")));
        assert_ne!(a, request_hash(1, "sim", &user("ho")));
    }

    #[test]
    fn a_canned_reply_answers_unless_the_request_scripts_one() {
        let canned = json!({"tasks": []});
        let answer = |messages: &[Message]| {
            pieces(
                &mut Rng::with_seed(1),
                (1, 1),
                &Shape::Text,
                messages,
                None,
                Some(&canned),
            )
            .concat()
        };
        assert_eq!(answer(&user("plan it")), r#"{"tasks":[]}"#);
        assert_eq!(answer(&user(r#"{"$sim_reply": "mine"}"#)), "mine");
    }

    #[test]
    fn a_reply_marker_is_answered_verbatim() {
        let messages = user(r#"Plan this: { "$sim_reply": {"tasks": [1, 2]} } thanks"#);
        let text: String = pieces(
            &mut Rng::with_seed(1),
            (1, 1),
            &Shape::Text,
            &messages,
            None,
            None,
        )
        .concat();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"tasks": [1, 2]})
        );
        let messages = user(r#"{"$sim_reply": "hello there world"}"#);
        let pieces = pieces(
            &mut Rng::with_seed(1),
            (1, 1),
            &Shape::Text,
            &messages,
            None,
            None,
        );
        assert_eq!(pieces, vec!["hello ", "there ", "world"]);
    }

    #[test]
    fn a_replies_script_is_found_with_its_hash() {
        let first = user(r#"Plan: {"$sim_replies": ["one", {"n": 2}]} please"#);
        let (list, hash) = replies(&first).unwrap();
        assert_eq!(list, vec![json!("one"), json!({"n": 2})]);
        let again = user(r#"Repair: {"$sim_replies": ["one", {"n": 2}]} (you said "one")"#);
        assert_eq!(
            replies(&again).unwrap().1,
            hash,
            "the same script, however asked"
        );
        let other = user(r#"{"$sim_replies": ["two"]}"#);
        assert_ne!(replies(&other).unwrap().1, hash);
        assert!(replies(&user(r#"{"$sim_replies": []}"#)).is_none());
        assert!(replies(&user("no script")).is_none());
        let text = pieces(
            &mut Rng::with_seed(1),
            (1, 1),
            &Shape::Text,
            &first,
            Some(json!({"n": 2})),
            None,
        )
        .concat();
        assert_eq!(text, r#"{"n":2}"#);
    }

    #[test]
    fn a_schema_is_filled_with_its_required_properties() {
        let schema = json!({
            "type": "object",
            "required": ["name", "count", "tags", "kind", "nested"],
            "properties": {
                "name": {"type": "string", "minLength": 12},
                "count": {"type": "integer", "minimum": 3, "maximum": 5},
                "tags": {"type": "array", "minItems": 2, "items": {"type": "string"}},
                "kind": {"enum": ["a", "b"]},
                "nested": {"type": "object", "properties": {"ok": {"type": "boolean"}}},
                "optional": {"type": "string"}
            }
        });
        let value = fill(&schema, &mut Rng::with_seed(3), 0);
        assert!(value["name"].as_str().unwrap().len() >= 12);
        assert!((3..=5).contains(&value["count"].as_i64().unwrap()));
        assert_eq!(value["tags"].as_array().unwrap().len(), 2);
        assert!(["a", "b"].contains(&value["kind"].as_str().unwrap()));
        assert!(value["nested"]["ok"].is_boolean());
        assert!(value.get("optional").is_none());
        assert_eq!(value, fill(&schema, &mut Rng::with_seed(3), 0));
    }

    #[test]
    fn a_schema_marker_shapes_the_answer() {
        let messages =
            user(r#"{"$sim_schema": {"type": "object", "properties": {"n": {"const": 4}}}}"#);
        let text = pieces(
            &mut Rng::with_seed(1),
            (1, 1),
            &Shape::Text,
            &messages,
            None,
            None,
        )
        .concat();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"n": 4})
        );
    }

    #[test]
    fn a_self_referencing_schema_stops() {
        let schema = json!({"type": "array", "items": {"type": "array", "items": {"$ref": "#"}}});
        let mut nested = schema.clone();
        for _ in 0..10 {
            nested = json!({"type": "array", "items": nested});
        }
        let value = fill(&nested, &mut Rng::with_seed(1), 0);
        assert!(value.to_string().contains("null"));
    }
}
