//! The simulated model server over real HTTP on loopback, driven by reqwest.

use std::pin::Pin;
use std::time::Duration;

use axum::body::Bytes;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};

use super::*;

/// Long enough for anything the server sends at once to arrive; on a paused clock it passes
/// in no real time.
const QUIET: Duration = Duration::from_secs(30);

async fn start(config: SimConfig) -> SimHandle {
    SimServer::start(config).await.unwrap()
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

fn messages(model: &str, text: &str) -> Value {
    json!({
        "model": model,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": text}],
    })
}

async fn post_openai(sim: &SimHandle, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/chat/completions", sim.openai_base_url()))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn post_anthropic(sim: &SimHandle, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/messages", sim.base_url()))
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn openai_content(sim: &SimHandle, body: &Value) -> String {
    let response = post_openai(sim, body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// One server-sent event.
#[derive(Debug)]
struct SseEvent {
    event: Option<String>,
    data: String,
}

impl SseEvent {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

/// Reads a response body as server-sent events.
struct SseReader {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buffer: String,
}

impl SseReader {
    fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "content-type"), "text/event-stream");
        Self {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event, or `None` once the body ends.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let raw: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent {
                    event: None,
                    data: String::new(),
                };
                for line in raw.lines() {
                    if let Some(name) = line.strip_prefix("event: ") {
                        event.event = Some(name.to_owned());
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        event.data.push_str(data);
                    }
                }
                return Some(event);
            }
            let bytes = self.body.next().await?.unwrap();
            self.buffer.push_str(std::str::from_utf8(&bytes).unwrap());
        }
    }

    async fn all(mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

#[tokio::test]
async fn an_openai_answer_is_deterministic_and_counted() {
    let sim = start(SimConfig {
        seed: 7,
        ..SimConfig::default()
    })
    .await;
    let body = chat("sim", "Write a haiku about queues."); // 27 characters: 7 tokens.
    let response = post_openai(&sim, &body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], "sim");
    assert!(answer["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert!(answer["created"].as_u64().unwrap() > 0);
    let choice = &answer["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["finish_reason"], "stop");
    let content = choice["message"]["content"].as_str().unwrap();
    let words = content.split(' ').count() as u64;
    assert!((12..=40).contains(&words), "{content}");
    assert_eq!(answer["usage"]["prompt_tokens"], 7);
    assert_eq!(answer["usage"]["completion_tokens"], words);
    assert_eq!(answer["usage"]["total_tokens"], 7 + words);

    assert_eq!(openai_content(&sim, &body).await, content);
    let other = chat("sim", "Write a haiku about stacks.");
    assert_ne!(openai_content(&sim, &other).await, content);
    let reseeded = start(SimConfig {
        seed: 8,
        ..SimConfig::default()
    })
    .await;
    assert_ne!(openai_content(&reseeded, &body).await, content);

    assert_eq!(sim.stats().count_status(Endpoint::ChatCompletions, 200), 3);
    assert_eq!(sim.stats().total(), 3);
    sim.shutdown().await.unwrap();
    reseeded.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_openai_stream_carries_the_same_answer() {
    let sim = start(SimConfig::default()).await;
    let body = chat("sim", "Stream me something.");
    let expected = openai_content(&sim, &body).await;

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let events = SseReader::new(post_openai(&sim, &streamed).await)
        .all()
        .await;
    let (done, chunks) = events.split_last().unwrap();
    assert_eq!(done.data, "[DONE]");
    let chunks: Vec<Value> = chunks.iter().map(SseEvent::json).collect();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["model"], "sim");
        assert_eq!(chunk["id"], chunks[0]["id"]);
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant"})
    );
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let deltas = &chunks[1..chunks.len() - 2];
    let content: String = deltas
        .iter()
        .map(|chunk| {
            assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null);
            chunk["choices"][0]["delta"]["content"].as_str().unwrap()
        })
        .collect();
    assert_eq!(content, expected);
    assert_eq!(usage["usage"]["completion_tokens"], deltas.len());
    assert_eq!(usage["usage"]["prompt_tokens"], 5);

    // Without include_usage, the finish chunk comes right before [DONE].
    streamed["stream_options"] = Value::Null;
    let events = SseReader::new(post_openai(&sim, &streamed).await)
        .all()
        .await;
    assert_eq!(events[events.len() - 1].data, "[DONE]");
    assert_eq!(
        events[events.len() - 2].json()["choices"][0]["finish_reason"],
        "stop"
    );
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn max_tokens_cuts_the_answer() {
    let sim = start(SimConfig {
        tokens: (20, 20),
        ..SimConfig::default()
    })
    .await;
    let mut body = chat("sim", "Long answer, please.");
    let full = openai_content(&sim, &body).await;
    body["max_completion_tokens"] = json!(5);
    let answer: Value = post_openai(&sim, &body).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    assert_eq!(answer["usage"]["completion_tokens"], 5);
    let cut = answer["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(full.starts_with(cut) && cut.len() < full.len());

    let mut request = messages("sim", "Long answer, please.");
    request["max_tokens"] = json!(5);
    let answer: Value = post_anthropic(&sim, &request).await.json().await.unwrap();
    assert_eq!(answer["stop_reason"], "max_tokens");
    assert_eq!(answer["usage"]["output_tokens"], 5);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_anthropic_answer_and_stream_agree() {
    let sim = start(SimConfig::default()).await;
    let mut body = messages("claude-sim", "Hello there");
    body["system"] = json!([{"type": "text", "text": "Be brief."}]);
    body["messages"] =
        json!([{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}]);
    let response = post_anthropic(&sim, &body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["type"], "message");
    assert_eq!(answer["role"], "assistant");
    assert_eq!(answer["model"], "claude-sim");
    assert_eq!(answer["stop_reason"], "end_turn");
    assert_eq!(answer["content"][0]["type"], "text");
    let text = answer["content"][0]["text"].as_str().unwrap().to_owned();
    // "Be brief." and "Hello there": 20 characters.
    assert_eq!(answer["usage"]["input_tokens"], 5);
    let output_tokens = answer["usage"]["output_tokens"].as_u64().unwrap();
    assert_eq!(output_tokens, text.split(' ').count() as u64);

    body["stream"] = json!(true);
    let events = SseReader::new(post_anthropic(&sim, &body).await)
        .all()
        .await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    let deltas = names.len() - 6;
    let mut expected = vec!["message_start", "content_block_start", "ping"];
    expected.extend(std::iter::repeat_n("content_block_delta", deltas));
    expected.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, expected);
    for event in &events {
        assert_eq!(event.json()["type"], event.event.as_deref().unwrap());
    }
    let start = events[0].json();
    assert_eq!(start["message"]["usage"]["input_tokens"], 5);
    assert_eq!(start["message"]["model"], "claude-sim");
    let streamed: String = events[3..3 + deltas]
        .iter()
        .map(|event| {
            let delta = event.json();
            assert_eq!(delta["index"], 0);
            assert_eq!(delta["delta"]["type"], "text_delta");
            delta["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(streamed, text);
    let end = events[events.len() - 2].json();
    assert_eq!(end["delta"]["stop_reason"], "end_turn");
    assert_eq!(end["usage"]["output_tokens"], output_tokens);
    assert_eq!(deltas as u64, output_tokens);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn bad_requests_are_answered_400_in_each_format() {
    let sim = start(SimConfig::default()).await;
    let response = post_openai(&sim, &json!({"model": "sim", "messages": []})).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], "messages");

    let response = post_openai(&sim, &json!({"messages": "no"})).await;
    assert_eq!(response.status(), 400);

    let mut no_max = messages("sim", "hi");
    no_max.as_object_mut().unwrap().remove("max_tokens");
    let response = post_anthropic(&sim, &no_max).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens")
    );

    assert_eq!(sim.stats().count_status(Endpoint::ChatCompletions, 400), 2);
    assert_eq!(sim.stats().count_status(Endpoint::Messages, 400), 1);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_error_rate_of_one_fails_every_request() {
    let sim = start(SimConfig {
        error_rate: 1.0,
        ..SimConfig::default()
    })
    .await;
    for _ in 0..3 {
        let response = post_openai(&sim, &chat("sim", "hi")).await;
        assert_eq!(response.status(), 500);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["type"], "server_error");
        assert_eq!(body["error"]["param"], Value::Null);
        assert!(body["error"]["message"].is_string());
        assert!(body["error"].as_object().unwrap().contains_key("code"));
    }
    let response = post_anthropic(&sim, &messages("sim", "hi")).await;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "api_error");
    assert_eq!(sim.stats().count_status(Endpoint::ChatCompletions, 500), 3);
    assert_eq!(sim.stats().count_status(Endpoint::Messages, 500), 1);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_fixed_failure_has_each_formats_error_body() {
    let sim = start(SimConfig {
        fail_with: Some(401),
        ..SimConfig::default()
    })
    .await;
    let response = post_openai(&sim, &chat("sim", "hi")).await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let response = post_anthropic(&sim, &messages("sim", "hi")).await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"type": "error", "error": {"type": "authentication_error", "message": body["error"]["message"]}})
    );
    sim.shutdown().await.unwrap();

    let sim = start(SimConfig {
        fail_with: Some(529),
        ..SimConfig::default()
    })
    .await;
    let response = post_anthropic(&sim, &messages("sim", "hi")).await;
    assert_eq!(response.status(), 529);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "overloaded_error");
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_api_key_is_checked_when_configured() {
    let sim = start(SimConfig {
        api_key: Some("sk-sim".into()),
        ..SimConfig::default()
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/chat/completions", sim.openai_base_url());
    let body = chat("sim", "hi");
    let response = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let response = client
        .post(&url)
        .bearer_auth("sk-sim")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let url = format!("{}/messages", sim.base_url());
    let body = messages("sim", "hi");
    let response = post_anthropic(&sim, &body).await;
    assert_eq!(response.status(), 401);
    let without_version = client.post(&url).header("x-api-key", "sk-sim").json(&body);
    assert_eq!(without_version.send().await.unwrap().status(), 400);
    let response = client
        .post(&url)
        .header("x-api-key", "sk-sim")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    sim.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_answers_429_with_its_headers() {
    let sim = start(SimConfig {
        rate_limit: Some(2),
        ..SimConfig::default()
    })
    .await;
    let first = post_openai(&sim, &chat("sim", "hi")).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-ratelimit-limit-requests"), "2");
    assert_eq!(header(&first, "x-ratelimit-remaining-requests"), "1");
    assert_eq!(header(&first, "x-ratelimit-reset-requests"), "1m0s");
    tokio::time::advance(Duration::from_secs(20)).await;
    let second = post_anthropic(&sim, &messages("sim", "hi")).await;
    assert_eq!(second.status(), 200);
    assert_eq!(
        header(&second, "anthropic-ratelimit-requests-remaining"),
        "0"
    );

    let limited = post_openai(&sim, &chat("sim", "hi")).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(header(&limited, "retry-after"), "40");
    assert_eq!(header(&limited, "x-ratelimit-limit-requests"), "2");
    assert_eq!(header(&limited, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(header(&limited, "x-ratelimit-reset-requests"), "40s");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");

    let limited = post_anthropic(&sim, &messages("sim", "hi")).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(header(&limited, "retry-after"), "40");
    assert_eq!(header(&limited, "anthropic-ratelimit-requests-limit"), "2");
    assert_eq!(
        header(&limited, "anthropic-ratelimit-requests-remaining"),
        "0"
    );
    assert!(header(&limited, "anthropic-ratelimit-requests-reset").ends_with('Z'));
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");

    tokio::time::advance(Duration::from_secs(40)).await;
    assert_eq!(post_openai(&sim, &chat("sim", "hi")).await.status(), 200);
    sim.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_stall_sends_three_pieces_then_nothing() {
    let sim = start(SimConfig {
        stall_after: Some(3),
        ..SimConfig::default()
    })
    .await;
    let mut body = chat("sim", "hi");
    body["stream"] = json!(true);
    let mut reader = SseReader::new(post_openai(&sim, &body).await);
    let role = reader.next().await.unwrap().json();
    assert_eq!(role["choices"][0]["delta"]["role"], "assistant");
    for _ in 0..3 {
        let chunk = reader.next().await.unwrap().json();
        assert!(chunk["choices"][0]["delta"]["content"].is_string());
    }
    assert!(
        timeout(QUIET, reader.next()).await.is_err(),
        "a stalled stream sent more"
    );

    let mut body = messages("sim", "hi");
    body["stream"] = json!(true);
    let mut reader = SseReader::new(post_anthropic(&sim, &body).await);
    let mut names = Vec::new();
    while let Ok(Some(event)) = timeout(QUIET, reader.next()).await {
        names.push(event.event.unwrap());
    }
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta"
        ]
    );

    // Without streaming, a stalled request is never answered.
    let body = chat("sim", "hi");
    assert!(timeout(QUIET, post_openai(&sim, &body)).await.is_err());
    assert_eq!(sim.stats().count_status(Endpoint::ChatCompletions, 200), 2);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_ends_a_stalled_stream() {
    let sim = start(SimConfig::default()).await;
    let mut body = chat("sim:stall=0", "hi");
    body["stream"] = json!(true);
    let mut reader = SseReader::new(post_openai(&sim, &body).await);
    assert!(reader.next().await.is_some());
    sim.shutdown().await.unwrap();
    assert!(reader.next().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn latency_passes_on_the_paused_clock() {
    let sim = start(SimConfig {
        latency: Latency::fixed(1000, 0),
        ..SimConfig::default()
    })
    .await;
    let body = chat("sim", "hi");
    let started = Instant::now();
    let client = reqwest::Client::new();
    let url = format!("{}/chat/completions", sim.openai_base_url());
    let mut request = tokio::spawn(client.post(url).json(&body).send());
    assert!(
        timeout(Duration::from_millis(999), &mut request)
            .await
            .is_err()
    );
    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1100), "{elapsed:?}");

    // Per-token delays space a stream's pieces: 5 pieces, 100 ms before each but the first.
    let mut body = chat("sim:ttft=0:tpt=100:tokens=5", "hi");
    body["stream"] = json!(true);
    let started = Instant::now();
    let events = SseReader::new(post_openai(&sim, &body).await).all().await;
    assert_eq!(events.len(), 1 + 5 + 1 + 1);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(500), "{elapsed:?}");
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_first_requests_of_a_scenario_fail_then_it_succeeds() {
    let sim = start(SimConfig::default()).await;
    let body = chat("sim:fail=500x5", "hi");
    for _ in 0..5 {
        assert_eq!(post_openai(&sim, &body).await.status(), 500);
    }
    assert_eq!(post_openai(&sim, &body).await.status(), 200);
    assert_eq!(post_openai(&sim, &body).await.status(), 200);

    let body = messages("sim:429=2x1", "hi");
    let limited = post_anthropic(&sim, &body).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(header(&limited, "retry-after"), "2");
    assert_eq!(post_anthropic(&sim, &body).await.status(), 200);

    let body = chat("sim:429=1x1:fail=503x2", "hi");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(post_openai(&sim, &body).await.status().as_u16());
    }
    assert_eq!(statuses, [429, 503, 503, 200]);

    // The x-sim header carries directives; x-sim-scenario keeps counters apart.
    let client = reqwest::Client::new();
    let url = format!("{}/chat/completions", sim.openai_base_url());
    let send = |scenario: &'static str| {
        client
            .post(&url)
            .header("x-sim", "fail=502x1")
            .header("x-sim-scenario", scenario)
            .json(&chat("sim", "hi"))
            .send()
    };
    assert_eq!(send("a").await.unwrap().status(), 502);
    assert_eq!(send("b").await.unwrap().status(), 502);
    assert_eq!(send("a").await.unwrap().status(), 200);

    let response = post_openai(&sim, &chat("sim:fail=404", "hi")).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "model_not_found");
    let response = post_anthropic(&sim, &messages("sim:fail=529", "hi")).await;
    assert_eq!(response.status(), 529);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn model_name_directives_shape_the_answer() {
    let sim = start(SimConfig::default()).await;
    let content = openai_content(&sim, &chat("sim:tokens=3", "hi")).await;
    assert_eq!(content.split(' ').count(), 3);
    // Directives other than seed and shape do not change the content.
    let plain = openai_content(&sim, &chat("sim", "hi")).await;
    assert_eq!(openai_content(&sim, &chat("sim:tpt=0", "hi")).await, plain);
    assert_ne!(
        openai_content(&sim, &chat("sim:seed=99", "hi")).await,
        plain
    );

    let response = post_openai(&sim, &chat("sim:stal=3", "hi")).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["param"], "model");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stal=3")
    );
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn json_mode_answers_objects() {
    let sim = start(SimConfig::default()).await;
    let text = openai_content(&sim, &chat("sim:json", "hi")).await;
    let value: Value = serde_json::from_str(&text).unwrap();
    assert!(value["text"].is_string());

    let mut body = chat("sim", "Give me a person.");
    body["response_format"] = json!({
        "type": "json_schema",
        "json_schema": {
            "name": "person",
            "strict": true,
            "schema": {
                "type": "object",
                "required": ["name", "age"],
                "properties": {
                    "name": {"type": "string"},
                    "age": {"type": "integer", "minimum": 18, "maximum": 99}
                }
            }
        }
    });
    let value: Value = serde_json::from_str(&openai_content(&sim, &body).await).unwrap();
    assert!(value["name"].is_string());
    assert!((18..=99).contains(&value["age"].as_i64().unwrap()));

    let plan = json!({"tasks": [{"key": "a", "capability": "echo"}]});
    let prompt = format!("Plan it. {}", json!({"$sim_reply": plan}));
    let mut body = chat("sim", &prompt);
    body["response_format"] = json!({"type": "json_object"});
    body["stream"] = json!(true);
    let events = SseReader::new(post_openai(&sim, &body).await).all().await;
    let streamed: String = events
        .iter()
        .filter_map(|event| {
            let chunk: Value = serde_json::from_str(&event.data).ok()?;
            chunk["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&streamed).unwrap(), plan);

    let answer: Value = post_anthropic(&sim, &messages("sim", &prompt))
        .await
        .json()
        .await
        .unwrap();
    let text = answer["content"][0]["text"].as_str().unwrap();
    assert_eq!(serde_json::from_str::<Value>(text).unwrap(), plan);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_replies_script_is_answered_in_order_per_scenario() {
    let sim = start(SimConfig::default()).await;
    let script = json!({"$sim_replies": ["first answer", {"second": 2}]});
    // The prompt around the script may change between requests (a repair prompt quotes the
    // first answer); the script is what counts.
    let ask = |extra: &str| chat("sim", &format!("Plan. {script} {extra}"));
    assert_eq!(openai_content(&sim, &ask("")).await, "first answer");
    let second = openai_content(&sim, &ask("you said: first answer")).await;
    assert_eq!(
        serde_json::from_str::<Value>(&second).unwrap(),
        json!({"second": 2})
    );
    assert_eq!(
        openai_content(&sim, &ask("again")).await,
        second,
        "past the end, the last reply"
    );
    // Another scenario (here another model name) starts from the first reply; so does the
    // other wire format's first request in a scenario of its own.
    assert_eq!(
        openai_content(&sim, &chat("sim-2", &format!("{script}"))).await,
        "first answer"
    );
    let answer: Value = post_anthropic(&sim, &messages("sim-3", &format!("{script}")))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answer["content"][0]["text"], "first answer");
    // A refused request takes no reply.
    let refused = post_openai(&sim, &chat("sim-4:fail=503x1", &format!("{script}"))).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(
        openai_content(&sim, &chat("sim-4:fail=503x1", &format!("{script}"))).await,
        "first answer"
    );
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn stats_and_health_are_served() {
    let sim = start(SimConfig::default()).await;
    let client = reqwest::Client::new();
    let health = client
        .get(format!("{}/healthz", sim.root_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(sim.stats(), SimStats::default());

    post_openai(&sim, &chat("sim", "hi")).await;
    post_openai(&sim, &chat("sim:fail=503", "hi")).await;
    post_anthropic(&sim, &messages("sim", "hi")).await;
    let stats = sim.stats();
    assert_eq!(stats.total(), 3);
    assert_eq!(stats.count(Endpoint::ChatCompletions), 2);
    assert_eq!(stats.count_status(Endpoint::ChatCompletions, 503), 1);
    assert_eq!(stats.count_status(Endpoint::Messages, 200), 1);
    assert_eq!(stats.count_status(Endpoint::Messages, 500), 0);

    let served: SimStats = client
        .get(format!("{}/sim/stats", sim.root_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, stats);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_bad_config_is_refused() {
    let bad = [
        SimConfig {
            tokens: (5, 2),
            ..SimConfig::default()
        },
        SimConfig {
            error_rate: 1.5,
            ..SimConfig::default()
        },
        SimConfig {
            fail_with: Some(200),
            ..SimConfig::default()
        },
        SimConfig {
            rate_limit: Some(0),
            ..SimConfig::default()
        },
    ];
    for config in bad {
        assert!(matches!(
            SimServer::start(config).await,
            Err(Error::Config(_))
        ));
    }
    let parsed: SimConfig = serde_json::from_value(json!({
        "seed": 3,
        "latency": {"first_token_ms": [100, 200]},
        "rate_limit": 60
    }))
    .unwrap();
    assert_eq!(parsed.latency.first_token_ms, (100, 200));
    assert_eq!(parsed.tokens, SimConfig::default().tokens);
    assert!(serde_json::from_value::<SimConfig>(json!({"sede": 3})).is_err());
}

#[tokio::test]
async fn late_usage_moves_the_input_count_to_message_delta() {
    let sim = start(SimConfig::default()).await;
    let mut body = messages("sim:tokens=2:late_usage", "count me, please");
    body["stream"] = json!(true);
    let events = SseReader::new(post_anthropic(&sim, &body).await)
        .all()
        .await;
    let of = |name: &str| {
        events
            .iter()
            .find(|e| e.event.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no {name} event"))
            .json()
    };
    assert_eq!(of("message_start")["message"]["usage"]["input_tokens"], 0);
    let delta = of("message_delta");
    assert_eq!(delta["usage"]["input_tokens"], 4, "{delta}");
    assert_eq!(delta["usage"]["output_tokens"], 2, "{delta}");
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn nostream_answers_a_streamed_request_with_json() {
    let sim = start(SimConfig::default()).await;
    let mut chat = chat("sim:tokens=3:nostream", "hi");
    chat["stream"] = json!(true);
    let mut message = messages("sim:tokens=3:nostream", "hi");
    message["stream"] = json!(true);
    for response in [
        post_openai(&sim, &chat).await,
        post_anthropic(&sim, &message).await,
    ] {
        assert_eq!(response.status(), 200);
        assert!(header(&response, "content-type").starts_with("application/json"));
        let answer: Value = response.json().await.unwrap();
        assert!(
            answer.get("choices").is_some() || answer.get("content").is_some(),
            "{answer}"
        );
    }
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_reasoning_model_refuses_max_tokens() {
    let sim = start(SimConfig::default()).await;
    let mut body = chat("o3-mini", "hi");
    body["max_tokens"] = json!(10);
    let refused = post_openai(&sim, &body).await;
    assert_eq!(refused.status(), 400);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["param"], "max_tokens");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_completion_tokens")
    );
    let mut body = chat("o3-mini", "hi");
    body["max_completion_tokens"] = json!(10);
    assert_eq!(post_openai(&sim, &body).await.status(), 200);
    // Other models take either.
    let mut body = chat("gpt-4o-mini", "hi");
    body["max_tokens"] = json!(10);
    assert_eq!(post_openai(&sim, &body).await.status(), 200);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn sim_plan_answers_a_plan_over_the_listed_capabilities() {
    let sim = start(SimConfig::default()).await;
    let prompt = "Goal: tidy the docs\n\nCapabilities (each task needs exactly one of them):\n\
                  - edit: Edits text.\n- check\n\nLimits: at most 10 tasks in your plan; no \
                  chain of dependent tasks longer than 4; no task with more than 5 tasks \
                  depending on it directly.\n";
    let text = openai_content(&sim, &chat("sim:plan", prompt)).await;
    let plan: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(plan["tasks"][0]["capability"], "edit");
    assert_eq!(plan["tasks"][1]["capability"], "check");
    assert_eq!(plan["tasks"][1]["depends_on"], json!(["edit"]));
    sim.shutdown().await.unwrap();
}
