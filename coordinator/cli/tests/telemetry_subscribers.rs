//! Which subscriber makes the spans of objectives. One test in its own binary: tracing caches
//! each callsite's interest process-wide, so a test beside it on another thread, hitting the
//! same callsite with no subscriber, could cache "never" for it (this flaked in CI when it was
//! a unit test among others); alone in its process, and with the cache rebuilt under each
//! subscriber, the answer is the subscriber's own.

use opentelemetry_sdk::trace::SdkTracerProvider;
use swarm_cli::telemetry::{exporting_subscriber, log_subscriber};

#[test]
fn without_export_no_span_of_an_objective_is_made() {
    // The subscriber every command installs when no endpoint is set.
    tracing::subscriber::with_default(log_subscriber(), || {
        tracing::callsite::rebuild_interest_cache();
        assert!(!swarm_agents::trace::enabled());
        let span = swarm_agents::trace::workflow_span(swarm_protocol::ObjectiveId::new(), None);
        assert!(span.is_disabled());
    });
    // The exporting one makes them (a provider without an exporter sends nothing).
    let provider = SdkTracerProvider::builder().build();
    tracing::subscriber::with_default(exporting_subscriber(&provider), || {
        tracing::callsite::rebuild_interest_cache();
        assert!(swarm_agents::trace::enabled());
        let span = swarm_agents::trace::workflow_span(swarm_protocol::ObjectiveId::new(), None);
        assert!(!span.is_disabled());
        assert!(swarm_agents::trace::context_of(&span).is_some());
    });
}
