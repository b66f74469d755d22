//! The spans of an objective's work, named and attributed after the OpenTelemetry semantic
//! conventions for generative AI (development status; followed as of semantic-conventions
//! v1.41.0, [`SEMCONV_VERSION`]), and the W3C trace context that links them to a caller's trace
//! and carries them on to model APIs.
//!
//! | span | made by | name | `gen_ai.operation.name` |
//! |---|---|---|---|
//! | workflow, one per objective | the scheduler, at submit or recovery | `invoke_workflow objective` | `invoke_workflow` |
//! | agent, one per task attempt (the planning task's is the plan span) | the agent actor | `invoke_agent {agent}` | `invoke_agent` |
//! | inference, one per model call | `LlmAgent` | `chat {model}` | `chat` |
//!
//! Each is a `tracing` span at target [`TARGET`] and level INFO. Integers are recorded as
//! `i64`: the OpenTelemetry layer turns other integer types into text. The `swarm` binary exports
//! that target, and only when an OTLP endpoint is configured; otherwise its filter disables
//! the callsites, so making a span is one check of a cached interest that returns
//! `Span::none()` without evaluating a field. Nothing here formats a string or reads a
//! clock unless the span is enabled.
//!
//! Prompts and answers go on inference spans (`gen_ai.system_instructions`,
//! `gen_ai.input.messages`, `gen_ai.output.messages`) only when [`CAPTURE_CONTENT_VAR`] is
//! `true`.

use std::str::FromStr;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use swarm_protocol::{AgentId, FailureKind, ObjectiveId, Task, TaskOutcome, TraceContext};
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of every span here: the one target the OpenTelemetry layer exports.
pub const TARGET: &str = "gen_ai";

/// The version of the OpenTelemetry semantic conventions whose GenAI spans these follow.
pub const SEMCONV_VERSION: &str = "1.41.0";

/// The variable that turns on recording prompts and answers on inference spans (`true`; off
/// when unset or anything else), as the GenAI instrumentations of OpenTelemetry name it.
pub const CAPTURE_CONTENT_VAR: &str = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT";

/// True if [`CAPTURE_CONTENT_VAR`] is `true` (any case) in the environment.
pub fn capture_content_from_env() -> bool {
    std::env::var(CAPTURE_CONTENT_VAR).is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// True if spans of [`TARGET`] are made at all: false (one atomic load once the callsite is
/// registered) unless a subscriber wants them, so callers can skip looking up a parent span.
#[inline]
pub fn enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

/// The workflow span of an objective: a root, or the child of the caller's span when it sent
/// a trace context.
pub fn workflow_span(objective: ObjectiveId, caller: Option<&TraceContext>) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "invoke_workflow",
        otel.name = "invoke_workflow objective",
        otel.kind = "internal",
        otel.status_code = Empty,
        gen_ai.operation.name = "invoke_workflow",
        gen_ai.workflow.name = "objective",
        swarm.objective.id = %objective,
        "error.type" = Empty,
    );
    if let Some(caller) = caller
        && !span.is_disabled()
        && let Some(parent) = remote_context(caller)
    {
        // Fails only without the OpenTelemetry layer, where there is nothing to link.
        let _ = span.set_parent(parent);
    }
    span
}

/// The agent span of one task attempt, a child of `parent` (its objective's workflow span).
pub fn agent_span(parent: &Span, agent: AgentId, name: &str, task: &Task) -> Span {
    tracing::info_span!(
        target: TARGET,
        parent: parent,
        "invoke_agent",
        otel.name = %format_args!("invoke_agent {name}"),
        otel.kind = "internal",
        otel.status_code = Empty,
        gen_ai.operation.name = "invoke_agent",
        gen_ai.agent.name = name,
        gen_ai.agent.id = %agent,
        swarm.objective.id = %task.objective,
        swarm.task.id = %task.id,
        swarm.task.key = %task.key,
        swarm.task.capability = %task.capability,
        swarm.task.attempt = i64::from(task.attempt),
        "error.type" = Empty,
    )
}

/// Records how an attempt or an objective ended on its span: a failure sets the span's status
/// to error and `error.type` to the failure's kind.
pub fn record_outcome(span: &Span, outcome: &TaskOutcome) {
    if span.is_disabled() {
        return;
    }
    if let TaskOutcome::Failed { kind, .. } = outcome {
        record_error(span, failure_type(*kind));
    }
}

/// Marks a span as failed with the low-cardinality `error_type` (semconv `error.type`).
pub fn record_error(span: &Span, error_type: &str) {
    span.record("otel.status_code", "error");
    span.record("error.type", error_type);
}

/// A failure kind as `error.type`.
pub fn failure_type(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::Transient => "transient",
        FailureKind::Permanent => "permanent",
        FailureKind::Timeout => "timeout",
        FailureKind::InvalidOutput => "invalid_output",
        FailureKind::Declined => "declined",
    }
}

/// The W3C trace context of `span`, to send on with an outgoing request: `None` when the span
/// is disabled or not exported (no OpenTelemetry layer).
pub fn context_of(span: &Span) -> Option<TraceContext> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let otel_span = cx.span();
    let sc = otel_span.span_context();
    if !sc.is_valid() {
        return None;
    }
    let traceparent = format!(
        "00-{}-{}-{:02x}",
        sc.trace_id(),
        sc.span_id(),
        sc.trace_flags().to_u8()
    );
    let tracestate = sc.trace_state().header();
    TraceContext::parse(&traceparent, Some(&tracestate))
}

/// The OpenTelemetry context of a caller's span, or `None` if the stored value is not valid.
fn remote_context(caller: &TraceContext) -> Option<opentelemetry::Context> {
    let trace_id = TraceId::from_hex(caller.trace_id()).ok()?;
    let span_id = SpanId::from_hex(caller.parent_id()).ok()?;
    let state = caller
        .tracestate
        .as_deref()
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    let flags = TraceFlags::new(caller.flags() & TraceFlags::SAMPLED.to_u8());
    let context = SpanContext::new(trace_id, span_id, flags, true, state);
    context
        .is_valid()
        .then(|| opentelemetry::Context::new().with_remote_span_context(context))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_context_becomes_a_remote_parent() {
        let caller = TraceContext::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some("congo=t61rcWkgMzE"),
        )
        .expect("valid");
        let cx = remote_context(&caller).expect("valid");
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_remote());
        assert!(sc.is_sampled());
        assert_eq!(sc.trace_id().to_string(), caller.trace_id());
        assert_eq!(sc.span_id().to_string(), caller.parent_id());
        assert_eq!(sc.trace_state().header(), "congo=t61rcWkgMzE");
    }

    #[test]
    fn without_a_subscriber_spans_are_disabled_and_carry_no_context() {
        let span = workflow_span(ObjectiveId::new(), None);
        assert!(span.is_disabled());
        assert_eq!(context_of(&span), None);
    }
}
