//! Model providers' answers: a non-streaming OpenAI or Anthropic body, an error body, and a
//! streamed (SSE) answer read as `LlmAgent` reads it: bytes through `model::sse::events`,
//! each event folded by `StreamState::step`.
//!
//! Input: 1 byte picks the provider (low bit) and the size of the chunks the stream arrives
//! in (the rest); then the body.
//!
//! Properties: nothing panics; an error message is at most 500 bytes and an ellipsis; the
//! completion's text is the concatenation of the `Text` steps; how the stream is cut into
//! chunks changes nothing.

#![no_main]

use futures::StreamExt as _;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use swarm_agents::model::provider::{
    Completion, Provider, StreamState, StreamStep, error_message, parse_completion,
};

fuzz_target!(|data: &[u8]| {
    let Some((&head, body)) = data.split_first() else {
        return;
    };
    let provider = if head & 1 == 0 {
        Provider::Openai
    } else {
        Provider::Anthropic
    };
    let chunk = usize::from(head >> 1) + 1;

    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        let _ = parse_completion(provider, &value);
    }
    if let Ok(text) = std::str::from_utf8(body) {
        let message = error_message(text);
        assert!(
            message.len() <= 500 + '…'.len_utf8(),
            "{} bytes",
            message.len()
        );
    }

    let whole = fold(provider, body, body.len().max(1));
    let chunked = fold(provider, body, chunk);
    // Invalid UTF-8 breaks the stream where the chunk holding it arrives, so only a valid
    // stream must read the same however it is cut.
    if std::str::from_utf8(body).is_ok() {
        assert_eq!(whole, chunked, "chunks of {chunk} bytes read differently");
    }
});

/// What reading the stream ends with: the completion, whether it ended with `Done`, and the
/// error that stopped it.
#[derive(Debug, PartialEq)]
struct Folded {
    completion: Completion,
    done: bool,
    error: Option<String>,
}

fn fold(provider: Provider, body: &[u8], chunk: usize) -> Folded {
    let chunks: Vec<Result<Vec<u8>, std::convert::Infallible>> =
        body.chunks(chunk).map(|c| Ok(c.to_vec())).collect();
    let mut events = swarm_agents::model::sse::events(futures::stream::iter(chunks));
    let mut state = StreamState::default();
    let mut text = String::new();
    let mut error = None;
    futures::executor::block_on(async {
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(_) => {
                    // Its text holds positions within the chunk at fault.
                    error = Some("the stream broke".into());
                    break;
                }
            };
            match state.step(provider, &event.event, &event.data) {
                Ok(StreamStep::Text(t)) => {
                    assert!(!t.is_empty(), "an empty text step");
                    text.push_str(&t);
                }
                Ok(StreamStep::Nothing) => {}
                Ok(StreamStep::Done) => {
                    assert!(state.is_done());
                    break;
                }
                Err(message) => {
                    error = Some(message);
                    break;
                }
            }
        }
    });
    assert_eq!(text, state.completion.text, "the text is the steps' text");
    Folded {
        done: state.is_done(),
        completion: state.completion,
        error,
    }
}
