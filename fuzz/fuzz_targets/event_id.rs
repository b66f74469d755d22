//! `Last-Event-ID`: the header a reconnecting `EventSource` sends to `GET /v1/events` and
//! `GET /v1/objectives/{id}/events`, read as the server reads it.
//!
//! Properties: nothing panics; what is accepted is a decimal number within `u64`, with at most
//! spaces or tabs around it (and a `+` sign), and reads back from its own display; whatever
//! `HeaderValue` lets through reads the same from the header as from its bytes.

#![no_main]

use axum::http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use swarm_server::parse_event_id;

fuzz_target!(|data: &[u8]| {
    let parsed = parse_event_id(data);
    if let Some(seq) = parsed {
        let text = std::str::from_utf8(data).expect("an accepted id is ASCII");
        let digits = text.trim_matches([' ', '\t']).trim_start_matches('+');
        assert!(
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
            "accepted {text:?}"
        );
        assert_eq!(
            digits.trim_start_matches('0').parse::<u64>().unwrap_or(0),
            seq
        );
        assert_eq!(parse_event_id(seq.to_string().as_bytes()), Some(seq));
    }
    if let Ok(header) = HeaderValue::from_bytes(data) {
        assert_eq!(parse_event_id(header.as_bytes()), parsed);
    }
});
