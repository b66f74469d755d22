//! What the process writes about itself: log lines on stderr (filtered by `RUST_LOG`, `warn`
//! by default) and, when an OTLP endpoint is configured, OpenTelemetry traces of objectives
//! (the GenAI spans of `swarm_agents::trace`) exported over OTLP/HTTP with protobuf.
//!
//! Traces are configured by the standard variables only: `OTEL_EXPORTER_OTLP_ENDPOINT` (to
//! which `/v1/traces` is appended) or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is),
//! `OTEL_EXPORTER_OTLP_HEADERS` / `OTEL_EXPORTER_OTLP_TRACES_HEADERS`, `OTEL_SERVICE_NAME`
//! (`swarm` when unset) and `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and
//! `OTEL_TRACES_SAMPLER_ARG`, the batch processor's `OTEL_BSP_*`; `OTEL_SDK_DISABLED=true` or
//! `OTEL_TRACES_EXPORTER=none` turns them off.
//!
//! # Invariants
//! Without an endpoint no OpenTelemetry layer is installed: the subscriber is the plain log
//! one, which disables the spans' target (whatever `RUST_LOG` says, unless it names
//! `gen_ai`), so no span of an objective is even made and the scheduler's allocation path
//! does what it did before traces existed. Only the
//! `swarm` binary installs a subscriber. Spans are exported in batches by the SDK's own
//! thread; [`Telemetry::shutdown`] (or dropping it) exports what is left.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// The service name when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` gives one.
pub const SERVICE_NAME_DEFAULT: &str = "swarm";

/// The installed output; holds the trace pipeline, if any, until [`Telemetry::shutdown`].
#[derive(Debug)]
#[must_use = "dropping it stops the trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Installs the process's subscriber: the log lines, and the trace export if the
    /// environment asks for it. A trace exporter that cannot be built is an error (a wrong
    /// endpoint should not pass unnoticed); logs are installed first, so it can be reported.
    pub fn install() -> Result<Self, opentelemetry_otlp::ExporterBuildError> {
        let lookup = |name: &str| std::env::var(name).ok();
        if !wants_export(lookup) {
            log_subscriber().init();
            return Ok(Self { provider: None });
        }
        let provider = match exporting_provider(lookup) {
            Ok(provider) => provider,
            Err(err) => {
                log_subscriber().init();
                return Err(err);
            }
        };
        exporting_subscriber(&provider).init();
        Ok(Self {
            provider: Some(provider),
        })
    }

    /// True if spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still queued and stops the exporter. Call it once the swarm has
    /// stopped, so the spans its end closed are in the last batch.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            tracing::warn!(%err, "the trace exporter did not shut down cleanly");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True if `lookup` (the environment) names an OTLP endpoint for traces and does not turn
/// OpenTelemetry off.
pub fn wants_export(lookup: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &str| lookup(name).is_some_and(|v| !v.trim().is_empty());
    let is = |name: &str, value: &str| {
        lookup(name).is_some_and(|v| v.trim().eq_ignore_ascii_case(value))
    };
    (set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || set("OTEL_EXPORTER_OTLP_ENDPOINT"))
        && !is("OTEL_SDK_DISABLED", "true")
        && !is("OTEL_TRACES_EXPORTER", "none")
}

/// The log lines alone: what every command installs when traces are not exported.
pub fn log_subscriber() -> impl Subscriber + Send + Sync + 'static {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter())
        .with_writer(std::io::stderr)
        .finish()
}

/// The log lines, filtered as [`log_subscriber`]'s, beside the OpenTelemetry layer, which
/// sees the spans of `swarm_agents::trace::TARGET` only.
pub fn exporting_subscriber(
    provider: &SdkTracerProvider,
) -> impl Subscriber + Send + Sync + 'static {
    let tracer = provider.tracer("swarm");
    let spans = Targets::new().with_target(swarm_agents::trace::TARGET, tracing::Level::INFO);
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(log_filter()),
        )
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_level(false)
                .with_target(false)
                .with_filter(spans),
        )
}

/// A tracer provider exporting over OTLP/HTTP (protobuf, unless `OTEL_EXPORTER_OTLP_PROTOCOL`
/// asks for JSON, which this build does not carry) in batches; the exporter reads the
/// endpoint, headers, timeout and compression from the environment itself.
fn exporting_provider(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()?;
    // The default detectors read `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`.
    let named = lookup("OTEL_SERVICE_NAME").is_some_and(|v| !v.trim().is_empty())
        || lookup("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|v| v.contains("service.name="));
    let mut resource = Resource::builder();
    if !named {
        resource = resource.with_service_name(SERVICE_NAME_DEFAULT);
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// `RUST_LOG`'s filter (`warn` when unset or not valid), which leaves the spans of
/// objectives out unless it names their target: a verbose log does not make them either.
fn log_filter() -> EnvFilter {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let named = std::env::var("RUST_LOG").is_ok_and(|v| v.contains(swarm_agents::trace::TARGET));
    match format!("{}=off", swarm_agents::trace::TARGET).parse() {
        Ok(off) if !named => filter.add_directive(off),
        _ => filter,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn only_an_endpoint_turns_the_export_on() {
        assert!(!wants_export(env(&[])));
        assert!(!wants_export(env(&[("OTEL_SERVICE_NAME", "swarm")])));
        assert!(!wants_export(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])));
        assert!(wants_export(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:4318"
        )])));
        assert!(wants_export(env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:4318/v1/traces"
        )])));
        assert!(!wants_export(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ])));
        assert!(!wants_export(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ])));
    }
}
