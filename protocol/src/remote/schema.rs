//! The JSON Schema (draft 2020-12) of every message, generated from the types by schemars.
//!
//! The committed files under `protocol/schema/remote/` are these documents; a test compares
//! them and fails, saying how to regenerate them, when a type changed and the files did not.
//! The schemas describe what a receiver reads: optional fields may be left out, and fields
//! they do not list are ignored (not refused), as the version rule asks. What a schema cannot
//! say (an idempotency key that matches its attempt, one of `partial_output` and `text`) is
//! each message's `validate()`.
//!
//! Why schemars and not utoipa, which writes the HTTP API's OpenAPI document: these messages
//! are no HTTP bodies, and a worker author wants standalone JSON Schema documents that a
//! validator in any language reads as they are. utoipa's schemas are OpenAPI components, which
//! the server completes by editing the generated document (durations, name patterns); schemars
//! writes complete 2020-12 documents, with `$defs`, from the types alone.

use serde_json::{Map, Value};

use super::{
    Announce, AnnounceReply, Attempt, AttemptResult, Heartbeat, HeartbeatReply, Leave, Message,
    PROTOCOL_VERSION, Progress,
};

/// Where the committed schemas are, from the `protocol` package's root.
pub const SCHEMA_DIR: &str = "schema/remote";

/// The schema document of one message.
pub fn schema_of<M: Message>() -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut schema = generator.into_root_schema_for::<M>().to_value();
    if let Some(object) = schema.as_object_mut() {
        object.insert(
            "$comment".into(),
            Value::String(format!(
                "The `{}` message of swarm's remote-agent protocol, version {PROTOCOL_VERSION} \
                 (protocol/REMOTE.md). Generated from the Rust types; do not edit.",
                M::NAME
            )),
        );
    }
    sorted(schema)
}

/// The schema of every message, by its name, in the order REMOTE.md presents them.
pub fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        (Announce::NAME, schema_of::<Announce>()),
        (AnnounceReply::NAME, schema_of::<AnnounceReply>()),
        (Heartbeat::NAME, schema_of::<Heartbeat>()),
        (HeartbeatReply::NAME, schema_of::<HeartbeatReply>()),
        (Leave::NAME, schema_of::<Leave>()),
        (Attempt::NAME, schema_of::<Attempt>()),
        (Progress::NAME, schema_of::<Progress>()),
        (AttemptResult::NAME, schema_of::<AttemptResult>()),
    ]
}

/// The value with the keys of every object in order, so that a document's text does not
/// depend on whether `serde_json` keeps insertion order (a feature another crate of the build
/// may turn on).
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut out = Map::new();
            for (key, value) in entries {
                out.insert(key, sorted(value));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// A document as it is committed: pretty JSON and a final line break.
pub fn document_text(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::{Path, PathBuf};

    use serde::de::DeserializeOwned;

    use super::*;

    fn dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(SCHEMA_DIR)
    }

    const REGENERATE: &str =
        "UPDATE_SCHEMAS=1 cargo test -p swarm-protocol --locked remote::schema";

    /// Fails when a committed schema is not what the types generate (or is missing, or no
    /// message has it); with `UPDATE_SCHEMAS=1`, writes them instead.
    #[test]
    fn the_committed_schemas_are_what_the_types_generate() {
        let update = std::env::var_os("UPDATE_SCHEMAS").is_some_and(|v| v == "1");
        let dir = dir();
        let mut stale = Vec::new();
        for (name, schema) in schemas() {
            let path = dir.join(format!("{name}.json"));
            let text = document_text(&schema);
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
        }
        let known: Vec<String> = schemas()
            .into_iter()
            .map(|(name, _)| format!("{name}.json"))
            .collect();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let file = entry.unwrap().file_name().to_string_lossy().into_owned();
            if file.ends_with(".json") && !known.contains(&file) {
                stale.push(format!("{file} (no message has this name; delete it)"));
            }
        }
        assert!(
            stale.is_empty(),
            "these schemas differ from what the Rust types generate: {stale:?}; run `{REGENERATE}` \
             and commit the result"
        );
    }

    fn validator(schema: &Value) -> jsonschema::Validator {
        jsonschema::options()
            .offline()
            .build(schema)
            .unwrap_or_else(|e| panic!("the generated schema does not compile: {e}"))
    }

    /// The first place (a path) where `example` holds something that `written` does not:
    /// a key it lacks or a different value. `written` may hold more (defaults written out).
    fn not_within(example: &Value, written: &Value, path: &str) -> Option<String> {
        match (example, written) {
            (Value::Object(example), Value::Object(written)) => {
                example
                    .iter()
                    .find_map(|(key, value)| match written.get(key) {
                        Some(other) => not_within(value, other, &format!("{path}/{key}")),
                        None => Some(format!("{path}/{key}")),
                    })
            }
            (Value::Array(example), Value::Array(written)) if example.len() == written.len() => {
                example
                    .iter()
                    .zip(written)
                    .enumerate()
                    .find_map(|(i, (a, b))| not_within(a, b, &format!("{path}/{i}")))
            }
            (a, b) if a == b => None,
            _ => Some(path.to_owned()),
        }
    }

    /// Reads an example as `M`, checks it against `M`'s rules and schema, and that writing it
    /// back keeps every field it has (so it holds no misspelt field, which a reader ignores).
    fn check_example<M: Message + DeserializeOwned>(file: &str, example: &Value) {
        let message: M = serde_json::from_value(example.clone())
            .unwrap_or_else(|e| panic!("{file} is not a `{}`: {e}", M::NAME));
        if let Err(e) = message.validate() {
            panic!("{file} breaks a rule: {e}");
        }
        let written = serde_json::to_value(&message).unwrap();
        if let Some(path) = not_within(example, &written, "") {
            panic!("{file}: `{path}` does not read back as written (a misspelt field?)");
        }
        let schema = schema_of::<M>();
        let errors: Vec<String> = validator(&schema)
            .iter_errors(example)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{file} does not match its schema: {errors:?}"
        );
    }

    /// Every example under `schema/remote/examples/` (the ones REMOTE.md shows) reads as the
    /// message its name starts with, matches its schema and validates; every message has one.
    #[test]
    fn every_example_is_a_valid_message_that_matches_its_schema() {
        let mut covered = std::collections::BTreeSet::new();
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir().join("examples"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        for path in files {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let Some(stem) = file.strip_suffix(".json") else {
                continue;
            };
            let name = stem.split('.').next().unwrap_or(stem);
            let example: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
            match name {
                "announce" => check_example::<Announce>(&file, &example),
                "announce_reply" => check_example::<AnnounceReply>(&file, &example),
                "heartbeat" => check_example::<Heartbeat>(&file, &example),
                "heartbeat_reply" => check_example::<HeartbeatReply>(&file, &example),
                "leave" => check_example::<Leave>(&file, &example),
                "attempt" => check_example::<Attempt>(&file, &example),
                "progress" => check_example::<Progress>(&file, &example),
                "result" => check_example::<AttemptResult>(&file, &example),
                other => panic!("{file}: no message is named `{other}`"),
            }
            covered.insert(name.to_owned());
        }
        for (name, _) in schemas() {
            assert!(
                covered.contains(name),
                "no example of `{name}` under examples/"
            );
        }
    }

    /// Every JSON example in REMOTE.md is the example file it links to, unchanged, and every
    /// example file is shown there.
    #[test]
    fn remote_md_shows_the_example_files_unchanged() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let doc = std::fs::read_to_string(root.join("REMOTE.md")).unwrap();
        let marker = "](schema/remote/examples/";
        let mut linked: Option<String> = None;
        let mut block: Option<String> = None;
        let mut shown = std::collections::BTreeSet::new();
        for (i, line) in doc.lines().enumerate() {
            let trimmed = line.trim_start();
            if let Some(text) = &mut block {
                if trimmed.starts_with("```") {
                    let file = linked.take().unwrap_or_else(|| {
                        panic!(
                            "REMOTE.md:{}: a JSON example that links no example file",
                            i + 1
                        )
                    });
                    let in_doc: Value = serde_json::from_str(text).unwrap_or_else(|e| {
                        panic!(
                            "REMOTE.md:{}: the example of {file} is not JSON: {e}",
                            i + 1
                        )
                    });
                    let path = dir().join("examples").join(&file);
                    let in_file: Value =
                        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                    assert_eq!(
                        in_doc, in_file,
                        "REMOTE.md shows {file} otherwise than the file"
                    );
                    shown.insert(file);
                    block = None;
                } else {
                    text.push_str(line);
                    text.push('\n');
                }
            } else if trimmed.starts_with("```json") {
                block = Some(String::new());
            } else if let Some(at) = line.rfind(marker) {
                let rest = &line[at + marker.len()..];
                linked = rest.split(')').next().map(str::to_owned);
            }
        }
        for entry in std::fs::read_dir(dir().join("examples")).unwrap() {
            let file = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                shown.contains(&file),
                "REMOTE.md does not show examples/{file}"
            );
        }
    }

    /// A schema is no looser than the reader where it matters to a worker author: what
    /// serde refuses for a missing required field or a wrong tag, the schema refuses too.
    #[test]
    fn the_schemas_refuse_what_the_reader_refuses() {
        let attempt = validator(&schema_of::<Attempt>());
        assert!(!attempt.is_valid(&serde_json::json!({"agent": "A7"})));
        let result = validator(&schema_of::<AttemptResult>());
        let mut wrong = serde_json::json!({
            "attempt": {"objective": "0190f1a2-7c3b-7d4e-8f00-000000000001", "task": "T1",
                        "number": 1},
            "agent": "A7",
            "outcome": {"status": "failed", "kind": "bored", "message": "m"}
        });
        assert!(!result.is_valid(&wrong), "an unknown failure kind");
        wrong["outcome"]["kind"] = "transient".into();
        assert!(result.is_valid(&wrong));
        wrong["attempt"]["number"] = 0.into();
        assert!(!result.is_valid(&wrong), "attempts are numbered from 1");
    }

    #[test]
    fn an_example_field_the_reader_ignores_is_found() {
        let example = serde_json::json!({"a": 1, "b": [{"c": 2}]});
        let written = serde_json::json!({"a": 1, "b": [{"c": 2, "d": 0}], "e": 3});
        assert_eq!(not_within(&example, &written, ""), None);
        let misspelt = serde_json::json!({"a": 1, "b": [{"cc": 2}]});
        assert_eq!(not_within(&misspelt, &written, ""), Some("/b/0/cc".into()));
    }

    #[test]
    fn documents_are_sorted_so_their_text_is_stable() {
        let value = serde_json::json!({"b": 1, "a": {"d": [{"f": 1, "e": 2}], "c": 3}});
        assert_eq!(
            serde_json::to_string(&sorted(value)).unwrap(),
            r#"{"a":{"c":3,"d":[{"e":2,"f":1}]},"b":1}"#
        );
    }
}
