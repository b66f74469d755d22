//! Output schemas: a task's `output_schema` compiled once, when the task is added to its
//! objective, and the check of an output against it.
//!
//! Compiling never reads anything from outside the schema. The `jsonschema` crate is built
//! without its HTTP and file retrievers, and the validator is built `offline` as well (so a
//! feature turned on elsewhere in the build cannot bring fetching back): a `$ref` to another
//! document is an error when the objective is submitted, not a request to some server from
//! inside the scheduler's handler. The draft meta-schemas are built into the crate.

use serde_json::Value;
use swarm_protocol::OutputError;

/// The most errors one check reports: an output can be wrong in thousands of places, and the
/// errors travel in an event and the review queue.
pub(crate) const MAX_ERRORS: usize = 20;

/// A compiled `output_schema`.
pub(crate) struct OutputSchema(jsonschema::Validator);

impl std::fmt::Debug for OutputSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutputSchema")
    }
}

impl OutputSchema {
    /// Compiles a schema; the error says what is wrong with it.
    pub(crate) fn compile(schema: &Value) -> Result<Self, String> {
        jsonschema::options()
            .offline()
            .build(schema)
            .map(Self)
            .map_err(|e| e.to_string())
    }

    /// Checks an output: `Err` lists where it does not match (at most [`MAX_ERRORS`]), each
    /// with its JSON Pointer.
    pub(crate) fn check(&self, output: &Value) -> Result<(), Vec<OutputError>> {
        if self.0.is_valid(output) {
            return Ok(());
        }
        let errors: Vec<OutputError> = self
            .0
            .iter_errors(output)
            .take(MAX_ERRORS)
            .map(|e| OutputError {
                path: e.instance_path().to_string(),
                message: e.to_string(),
            })
            .collect();
        if errors.is_empty() {
            // `is_valid` and `iter_errors` agree; this only keeps a disagreement from passing
            // an invalid output.
            return Err(vec![OutputError {
                path: String::new(),
                message: "does not match the schema".into(),
            }]);
        }
        Err(errors)
    }
}

/// The reason a task goes to review for these errors.
pub(crate) fn review_reason(errors: &[OutputError]) -> String {
    let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
    format!(
        "the output does not match `output_schema` ({} error{}): {}",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" },
        listed.join("; ")
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn person() -> OutputSchema {
        OutputSchema::compile(&json!({
            "type": "object",
            "required": ["name", "tags"],
            "properties": {
                "name": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn errors_name_the_path_inside_the_output() {
        let schema = person();
        assert_eq!(schema.check(&json!({"name": "a", "tags": ["x"]})), Ok(()));
        let errors = schema
            .check(&json!({"name": 5, "tags": ["x", 7]}))
            .unwrap_err();
        let mut paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(paths, ["/name", "/tags/1"]);
        assert!(
            errors.iter().all(|e| e.message.contains("string")),
            "{errors:?}"
        );
        let missing = schema.check(&json!({"name": "a"})).unwrap_err();
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].path, "");
        assert!(missing[0].message.contains("tags"), "{missing:?}");
        let reason = review_reason(&errors);
        assert!(reason.starts_with("the output does not match `output_schema` (2 errors)"));
    }

    #[test]
    fn the_error_list_is_bounded() {
        let schema =
            OutputSchema::compile(&json!({"type": "array", "items": {"type": "string"}})).unwrap();
        let errors = schema.check(&json!(vec![1; 1000])).unwrap_err();
        assert_eq!(errors.len(), MAX_ERRORS);
    }

    #[test]
    fn invalid_schemas_and_remote_references_are_refused_without_fetching() {
        assert!(OutputSchema::compile(&json!({"type": 5})).is_err());
        assert!(OutputSchema::compile(&json!({"type": "strin"})).is_err());
        // Nothing listens on this port; a fetch would fail differently (and slowly).
        for remote in [
            "http://127.0.0.1:9/schema.json",
            "https://example.invalid/person.json#/definitions/a",
            "file:///etc/passwd",
        ] {
            let err = OutputSchema::compile(&json!({"$ref": remote})).unwrap_err();
            assert!(
                err.contains("disabled") || err.contains("etriev"),
                "{remote}: {err}"
            );
        }
        // References inside the schema, and the drafts' own meta-schemas, need nothing else.
        let local = OutputSchema::compile(&json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "definitions": {"n": {"type": "integer"}},
            "properties": {"n": {"$ref": "#/definitions/n"}}
        }))
        .unwrap();
        assert!(local.check(&json!({"n": 1})).is_ok());
        assert_eq!(local.check(&json!({"n": "1"})).unwrap_err()[0].path, "/n");
    }
}
