//! A webhook's objective template, filled from a delivery's payload.
//!
//! A template is an objective in JSON in which any object of the form
//! `{"$payload": "<JSON Pointer>"}` stands for the payload's value at that pointer (RFC 6901;
//! `""` is the whole payload). The references are checked when the hook is declared; a
//! pointer a payload lacks is an error naming the template field that holds it
//! (`template.tasks[0].input.ref`), answered 422.

use serde_json::Value;

/// The key of a template object that stands for a part of the payload.
pub const PAYLOAD_KEY: &str = "$payload";

/// A template or payload problem, naming the template field at fault (`template.goal`,
/// `template.tasks[0].input.ref`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct MappingError {
    /// The template field.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Checks a template: a JSON object whose `{"$payload": ...}` references each hold a JSON
/// Pointer (`""` or starting with `/`) and nothing else.
pub fn check_template(template: &Value) -> Result<(), MappingError> {
    if !template.is_object() {
        return Err(MappingError {
            field: "template".into(),
            message: "must be a JSON object: an objective, or `{\"$payload\": ...}` for one \
                      the payload holds"
                .into(),
        });
    }
    substitute(template, &Value::Null, "template", Pass::Check).map(|_| ())
}

/// The template with every `{"$payload": pointer}` replaced by the payload's value there.
pub fn fill_template(template: &Value, payload: &Value) -> Result<Value, MappingError> {
    substitute(template, payload, "template", Pass::Fill)
}

/// What [`substitute`] does with a `$payload` reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Checks its form only (at declaration, without a payload).
    Check,
    /// Replaces it with the payload's value.
    Fill,
}

/// The template at `field` with its `$payload` references checked, and filled from `payload`
/// on the `Fill` pass.
fn substitute(
    template: &Value,
    payload: &Value,
    field: &str,
    pass: Pass,
) -> Result<Value, MappingError> {
    match template {
        Value::Object(object) => {
            if let Some(pointer) = object.get(PAYLOAD_KEY) {
                let error = |message: String| MappingError {
                    field: field.to_owned(),
                    message,
                };
                if object.len() != 1 {
                    return Err(error(format!(
                        "an object with `{PAYLOAD_KEY}` must have no other key"
                    )));
                }
                let Some(pointer) = pointer.as_str() else {
                    return Err(error(format!(
                        "`{PAYLOAD_KEY}` must be a JSON Pointer string"
                    )));
                };
                if !(pointer.is_empty() || pointer.starts_with('/')) {
                    return Err(error(format!(
                        "`{pointer}` is not a JSON Pointer (it starts with `/`, or is empty for \
                         the whole payload)"
                    )));
                }
                if pass == Pass::Check {
                    return Ok(Value::Null);
                }
                return payload
                    .pointer(pointer)
                    .cloned()
                    .ok_or_else(|| error(format!("the payload has nothing at `{pointer}`")));
            }
            let mut mapped = serde_json::Map::with_capacity(object.len());
            for (key, value) in object {
                let field = format!("{field}.{key}");
                mapped.insert(key.clone(), substitute(value, payload, &field, pass)?);
            }
            Ok(Value::Object(mapped))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| substitute(item, payload, &format!("{field}[{i}]"), pass))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_payload_fills_the_template() {
        let template = json!({
            "goal": {"$payload": "/head_commit/message"},
            "tasks": [{
                "id": "deploy",
                "capability": "work",
                "input": {"ref": {"$payload": "/ref"}, "all": {"$payload": ""}, "n": 1}
            }]
        });
        check_template(&template).unwrap();
        let payload = json!({"ref": "main", "head_commit": {"message": "fix it"}});
        let mapped = fill_template(&template, &payload).unwrap();
        assert_eq!(mapped["goal"], "fix it");
        assert_eq!(mapped["tasks"][0]["input"]["ref"], "main");
        assert_eq!(mapped["tasks"][0]["input"]["all"], payload);
        assert_eq!(mapped["tasks"][0]["input"]["n"], 1);
        let objective: swarm_protocol::Objective = serde_json::from_value(mapped).unwrap();
        assert_eq!(objective.goal, "fix it");
    }

    #[test]
    fn a_missing_path_or_a_bad_reference_names_the_template_field() {
        let template = json!({"goal": "g", "tasks": [{"input": {"ref": {"$payload": "/ref"}}}]});
        let err = fill_template(&template, &json!({"other": 1})).unwrap_err();
        assert_eq!(err.field, "template.tasks[0].input.ref");
        assert!(err.message.contains("/ref"), "{err}");
        for (bad, what) in [
            (json!({"goal": {"$payload": "ref"}}), "JSON Pointer"),
            (json!({"goal": {"$payload": 3}}), "string"),
            (json!({"goal": {"$payload": "/a", "x": 1}}), "no other key"),
        ] {
            let err = check_template(&bad).unwrap_err();
            assert_eq!(err.field, "template.goal");
            assert!(err.message.contains(what), "{err}");
        }
        let err = check_template(&json!(["goal"])).unwrap_err();
        assert_eq!(err.field, "template");
        assert!(check_template(&json!({ "$payload": "" })).is_ok());
    }
}
