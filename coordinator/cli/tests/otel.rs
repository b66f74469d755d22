//! OpenTelemetry traces end to end: a `swarm serve` child exports to an OTLP receiver inside
//! the test, which decodes the real wire format (OTLP/HTTP, protobuf, with the
//! `opentelemetry-proto` types). A planned objective submitted with a W3C `traceparent` runs a
//! planner and a writer against the simulated model server; the spans must continue the
//! caller's trace as workflow → agent attempt → inference, carry the GenAI attributes, and
//! the model calls must carry each inference span's context onward.
//!
//! The batch delay is set far beyond the test's length, so the spans arrive only through the
//! flush at shutdown (SIGTERM), which is what the test waits on: no sleep, no polling.

#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::Server;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use swarm_agents::sim::{SimConfig, SimHandle, SimServer};

const BIN: &str = env!("CARGO_BIN_EXE_swarm");

/// The caller's span: the objective's workflow span must be its child.
const TRACE_ID: &str = "5b8efff798038103d269b633813fc60c";
const CALLER_SPAN_ID: &str = "eee19b7ec3c1b174";

/// A span as received, with the resource's service name.
#[derive(Debug, Clone)]
struct Received {
    service: Option<String>,
    span: Span,
}

/// What the receiver got: the spans, and the content types the exporter posted.
#[derive(Default)]
struct Inbox {
    spans: Vec<Received>,
    content_types: Vec<String>,
}

/// `POST /v1/traces`: decodes an `ExportTraceServiceRequest` and keeps its spans.
async fn traces(
    State(inbox): State<Arc<Mutex<Inbox>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, HeaderMap::new(), Vec::new());
    };
    let mut inbox = inbox.lock().unwrap();
    inbox.content_types.push(content_type);
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .and_then(|r| string(&r.attributes, "service.name"));
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                inbox.spans.push(Received {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
    let mut answer = HeaderMap::new();
    answer.insert(
        header::CONTENT_TYPE,
        "application/x-protobuf".parse().unwrap(),
    );
    (
        StatusCode::OK,
        answer,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn string(attributes: &[KeyValue], key: &str) -> Option<String> {
    match attribute(attributes, key)? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match attribute(attributes, key)? {
        any_value::Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

fn strings(attributes: &[KeyValue], key: &str) -> Vec<String> {
    match attribute(attributes, key) {
        Some(any_value::Value::ArrayValue(array)) => array
            .values
            .iter()
            .filter_map(|v| match v.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A planner (`sim:plan`) and a writer, both OpenAI format, on the simulated server.
fn write_config(dir: &Path, sim: &SimHandle) {
    let text = format!(
        r#"
[store]
data_dir = "data"

[[agents]]
name = "planner"
provider = "openai"
base_url = "{openai}"
model = "sim:plan"
capabilities = ["plan"]

[[agents]]
name = "writer"
provider = "openai"
base_url = "{openai}"
model = "sim"
capabilities = ["write"]
description = "Writes short texts."
"#,
        openai = sim.base_url(),
    );
    std::fs::write(dir.join("swarm.toml"), text).unwrap();
}

fn serve(dir: &Path, env: &[(&str, String)]) -> Server {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env_remove("SWARM_CONFIG")
        .env_remove("SWARM_DATA_DIR")
        .env_remove("SWARM_API_TOKEN")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_TRACES_EXPORTER")
        .env_remove("OTEL_TRACES_SAMPLER")
        .env("RUST_LOG", "error")
        .args(["serve", "--addr", "127.0.0.1:0"]);
    for (key, value) in env {
        command.env(key, value);
    }
    Server::start(command)
}

#[test]
fn a_traced_objective_exports_its_genai_span_tree_over_otlp() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sim = runtime
        .block_on(SimServer::start(SimConfig::default()))
        .unwrap();
    let inbox = Arc::new(Mutex::new(Inbox::default()));
    let receiver = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let receiver_addr = receiver.local_addr().unwrap();
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .with_state(Arc::clone(&inbox));
    runtime.spawn(async move { axum::serve(receiver, app).await });

    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &sim);
    let server = serve(
        dir.path(),
        &[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://{receiver_addr}"),
            ),
            ("OTEL_SERVICE_NAME", "swarm-otel-test".to_owned()),
            // Nothing is exported before the shutdown's flush, which is what is tested.
            ("OTEL_BSP_SCHEDULE_DELAY", "3600000".to_owned()),
            (
                "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
                "true".to_owned(),
            ),
        ],
    );

    let client = reqwest::Client::new();
    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN_ID}-01");
    let objective = runtime.block_on(async {
        let answer = client
            .post(format!("{}/v1/objectives", server.url))
            .header("traceparent", &traceparent)
            .header("tracestate", "caller=1")
            .json(&serde_json::json!({"goal": "a haiku about tides"}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 202);
        let body: serde_json::Value = answer.json().await.unwrap();
        let id = body["id"].as_str().unwrap().to_owned();
        // The objective's event stream ends after its terminal event.
        let events = client
            .get(format!("{}/v1/objectives/{id}/events", server.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(events.contains("objective_succeeded"), "{events}");
        id
    });
    assert!(
        inbox.lock().unwrap().spans.is_empty(),
        "the batch delay is an hour: nothing is sent before the shutdown"
    );

    let pid = server.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let mut server = server;
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "swarm serve exited with {exit}");
    // The exporter's shutdown sent everything before the process exited.
    let inbox = inbox.lock().unwrap();
    assert!(
        inbox
            .content_types
            .iter()
            .all(|t| t == "application/x-protobuf"),
        "{:?}",
        inbox.content_types
    );
    let spans: Vec<&Received> = inbox
        .spans
        .iter()
        .filter(|r| hex(&r.span.trace_id) == TRACE_ID)
        .collect();
    assert!(
        spans
            .iter()
            .all(|r| r.service.as_deref() == Some("swarm-otel-test"))
    );
    let operation = |s: &Span| string(&s.attributes, "gen_ai.operation.name");

    // One workflow span, the caller's span's child.
    let workflows: Vec<&Span> = spans
        .iter()
        .map(|r| &r.span)
        .filter(|s| operation(s).as_deref() == Some("invoke_workflow"))
        .collect();
    assert_eq!(workflows.len(), 1, "{spans:#?}");
    let workflow = workflows[0];
    assert_eq!(workflow.name, "invoke_workflow objective");
    assert_eq!(hex(&workflow.parent_span_id), CALLER_SPAN_ID);
    assert_eq!(
        string(&workflow.attributes, "swarm.objective.id").as_deref(),
        Some(objective.as_str())
    );
    assert_eq!(workflow.trace_state, "caller=1");

    // Agent spans: the planning attempt (the plan span) and the writer's, children of the
    // workflow span.
    let agents: Vec<&Span> = spans
        .iter()
        .map(|r| &r.span)
        .filter(|s| operation(s).as_deref() == Some("invoke_agent"))
        .collect();
    for agent in &agents {
        assert_eq!(agent.parent_span_id, workflow.span_id, "{agent:#?}");
    }
    let agent_named = |name: &str| {
        agents
            .iter()
            .find(|s| string(&s.attributes, "gen_ai.agent.name").as_deref() == Some(name))
            .copied()
            .unwrap_or_else(|| panic!("no agent span of {name}: {agents:#?}"))
    };
    let planner = agent_named("planner");
    assert_eq!(planner.name, "invoke_agent planner");
    assert_eq!(
        string(&planner.attributes, "swarm.task.capability").as_deref(),
        Some("plan")
    );
    assert_eq!(int(&planner.attributes, "swarm.task.attempt"), Some(1));
    let writer = agent_named("writer");
    assert_eq!(
        string(&writer.attributes, "swarm.task.capability").as_deref(),
        Some("write")
    );

    // Inference spans: one per model call, each the child of an agent span, with the GenAI
    // attributes; the model call carried its context onward.
    let inferences: Vec<&Span> = spans
        .iter()
        .map(|r| &r.span)
        .filter(|s| operation(s).as_deref() == Some("chat"))
        .collect();
    let sent = sim.stats().traceparents;
    for parent in [planner, writer] {
        let calls: Vec<&&Span> = inferences
            .iter()
            .filter(|s| s.parent_span_id == parent.span_id)
            .collect();
        assert_eq!(calls.len(), 1, "{parent:#?}\n{inferences:#?}");
        let call = calls[0];
        let model = string(&call.attributes, "gen_ai.request.model").unwrap();
        assert_eq!(call.name, format!("chat {model}"));
        assert_eq!(call.kind, SpanKind::Client as i32);
        assert_eq!(
            string(&call.attributes, "gen_ai.provider.name").as_deref(),
            Some("openai")
        );
        assert!(string(&call.attributes, "gen_ai.response.model").is_some());
        assert!(int(&call.attributes, "gen_ai.usage.input_tokens").unwrap() > 0);
        assert!(int(&call.attributes, "gen_ai.usage.output_tokens").unwrap() > 0);
        assert!(!strings(&call.attributes, "gen_ai.response.finish_reasons").is_empty());
        assert!(string(&call.attributes, "error.type").is_none());
        // Content capture is on in this test.
        assert!(string(&call.attributes, "gen_ai.input.messages").is_some());
        assert!(string(&call.attributes, "gen_ai.output.messages").is_some());
        let onward = format!("00-{TRACE_ID}-{}-01", hex(&call.span_id));
        assert!(sent.contains(&onward), "{onward} not in {sent:?}");
    }
    drop(inbox);
    runtime.block_on(sim.shutdown()).unwrap();
}
