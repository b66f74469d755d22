//! Webhook deliveries: the `X-Swarm-Signature` header checked against a body, and the hook's
//! objective template filled from the payload, as `POST /v1/hooks/{name}` does.
//!
//! Input: 8 bytes `now_secs` (little endian), 2 bytes tolerance in seconds, then the header
//! up to the first newline, then the body; the body is read as JSON values: the template and
//! then the payload (a body that is not two JSON values still exercises the signature).
//!
//! Properties: nothing panics; a verified timestamp is within the tolerance of `now`; what
//! `sign` produces verifies; a template that checks out fills without a malformed-reference
//! error, and a filled template holds no `$payload` reference the payload did not carry.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use swarm_coordinator::triggers::Hook;
use swarm_coordinator::triggers::signature::{sign, verify};
use swarm_coordinator::triggers::template::PAYLOAD_KEY;
use swarm_protocol::Objective;

const SECRET: &[u8] = b"fuzz-secret";

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let (head, rest) = data.split_at(10);
    let now = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
    let tolerance = Duration::from_secs(u64::from(u16::from_le_bytes([head[8], head[9]])));
    let (header, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let header = String::from_utf8_lossy(header);

    if let Ok(t) = verify(SECRET, Some(&header), body, now, tolerance) {
        assert!(now.abs_diff(t) <= tolerance.as_secs());
    }
    let signed = sign(SECRET, now, body);
    assert_eq!(verify(SECRET, Some(&signed), body, now, tolerance), Ok(now));

    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    let (Some(Ok(template)), Some(Ok(payload))) = (values.next(), values.next()) else {
        return;
    };
    let Ok(hook) = Hook::new("fuzz", SECRET, template, tolerance) else {
        return;
    };
    assert_eq!(hook.verify(Some(&signed), body, now), Ok(now));
    match hook.objective(&payload) {
        Ok(filled) => {
            if !holds_reference(&payload) {
                assert!(!holds_reference(&filled), "an unfilled reference: {filled}");
            }
            // The route parses the filled template as an objective.
            let _ = serde_json::from_value::<Objective>(filled);
        }
        Err(err) => {
            assert!(err.field.starts_with("template"), "{err}");
            assert!(
                err.message.starts_with("the payload has nothing at"),
                "{err}"
            );
        }
    }
});

fn holds_reference(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.contains_key(PAYLOAD_KEY) || map.values().any(holds_reference),
        Value::Array(items) => items.iter().any(holds_reference),
        _ => false,
    }
}
