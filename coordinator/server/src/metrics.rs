//! `GET /metrics`: the swarm's state in the Prometheus text format.
//!
//! Nothing on the scheduler's hot path records a metric: a scrape asks the scheduler for its
//! counters, its allocation latency histogram and its queue depths, reads the registry's
//! snapshots and the agents' live status (breaker, limiter, restarts), writes them into a
//! recorder made for this scrape, and renders it. So a scrape costs two scheduler round trips
//! and one pass over the agents, and an agent that left stops appearing at the next scrape (a
//! long-lived recorder would keep its last values).
//!
//! Some families are written by hand after the recorder's text, because the `metrics` API
//! cannot carry them: the allocation latency histogram arrives already bucketed from the
//! scheduler (`metrics` histograms take single samples, and the Prometheus exporter keeps every
//! sample until the scrape, so replaying a million allocations into it would cost a million
//! entries and still get the sum wrong), and the limiter's wait time and the agents' cost are
//! counters in (fractional) seconds and dollars, where `metrics` counters are integers (the
//! agents' unpriced tokens go beside their cost, labelled alike).

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::PrometheusBuilder;
use swarm_protocol::{
    AgentStatus, BreakerStatus, Capability, Health, LatencyHistogram, QuotaUse, SchedulerStats,
    Spent, Usd,
};
use swarm_registry::AgentSnapshot;

use crate::AppState;
use crate::limits::Limit;
use crate::notify::NotifyStats;
use crate::problem::{PROBLEM_JSON, Problem};
use swarm_remote::HostStatus;

/// The media type of the Prometheus text format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

const HEALTHS: [Health; 4] = [Health::Up, Health::Degraded, Health::Down, Health::Draining];

const BREAKER_STATES: [&str; 3] = ["closed", "open", "half_open"];

/// One agent as a scrape sees it: the registry's snapshot and what its live instance says.
struct AgentMetrics {
    snapshot: AgentSnapshot,
    restarts: u32,
    status: AgentStatus,
}

/// The swarm's state in the Prometheus text format, gathered at scrape time.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "probes",
    operation_id = "metrics",
    responses(
        (status = 200, description = "Prometheus text exposition.", body = String,
         content_type = PROMETHEUS_TEXT),
        (status = 503, description = "The coordinator is not available.", body = Problem,
         content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn scrape(State(state): State<AppState>) -> Result<Response, Problem> {
    let stats = state.swarm.stats().await?;
    let depths = state.swarm.queue_depths().await?;
    let live = state.swarm.live_agents();
    let agents: Vec<AgentMetrics> = state
        .swarm
        .registry()
        .snapshots()
        .into_iter()
        .map(|snapshot| {
            let (restarts, status) = live
                .get(snapshot.descriptor.id)
                .map(|live| (live.restarts, live.instance.agent_status()))
                .unwrap_or_default();
            AgentMetrics {
                snapshot,
                restarts,
                status,
            }
        })
        .collect();
    let refused = state.limiters.refused();
    let notices = state.config.notices.as_ref().map(|n| *n.borrow());
    let remote = state
        .config
        .remote
        .as_ref()
        .map(swarm_remote::HostProbe::status);
    let mut response = render(&stats, &depths, &agents, &refused, notices, remote).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROMETHEUS_TEXT),
    );
    Ok(response)
}

/// The exposition text of one scrape.
fn render(
    stats: &SchedulerStats,
    depths: &[(Capability, u64)],
    agents: &[AgentMetrics],
    refused: &[(Limit, u64)],
    notices: Option<NotifyStats>,
    remote: Option<HostStatus>,
) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        record_scheduler(stats, depths);
        record_agents(agents);
        record_refused(refused);
        if let Some(notices) = &notices {
            record_notices(notices);
        }
        if let Some(remote) = &remote {
            record_remote(remote);
        }
    });
    let mut text = handle.render();
    write_latency_histogram(&mut text, &stats.allocation_latency);
    write_limiter_wait_seconds(&mut text, agents);
    write_cost(&mut text, agents);
    text
}

fn record_remote(remote: &HostStatus) {
    describe_gauge!(
        "swarm_remote_nats_connected",
        "1 while the coordinator's connection to NATS is up (remote agents)."
    );
    gauge!("swarm_remote_nats_connected").set(f64::from(u8::from(remote.connected)));
    describe_gauge!(
        "swarm_remote_agents",
        "Remote agents (of worker processes, over NATS) in the registry."
    );
    gauge!("swarm_remote_agents").set(remote.agents as f64);
    for (name, help, value) in [
        (
            "swarm_remote_nats_reconnects_total",
            "Times the coordinator's NATS connection came back after it was lost.",
            remote.reconnects,
        ),
        (
            "swarm_remote_heartbeats_missed_total",
            "Remote agents removed because their worker missed heartbeats (their attempts were re-queued).",
            remote.heartbeats_missed,
        ),
        (
            "swarm_remote_fenced_results_total",
            "Results of remote attempts that were no longer current, dropped (fenced).",
            remote.fenced,
        ),
        (
            "swarm_remote_leases_lost_total",
            "Remote attempts whose worker sent no progress for a lease.",
            remote.leases_lost,
        ),
        (
            "swarm_remote_attempts_total",
            "Attempts published to remote agents.",
            remote.attempts,
        ),
    ] {
        describe_counter!(name, help);
        counter!(name).absolute(value);
    }
}

fn record_notices(notices: &NotifyStats) {
    describe_counter!(
        "swarm_escalation_notices_total",
        "Escalation notices since start, by outcome (`delivered`, `failed`: out of tries or \
         refused by the receiver, `refused_by_breaker`, `dropped`: queue full or feed lagged)."
    );
    for (outcome, count) in [
        ("delivered", notices.delivered),
        ("failed", notices.failed),
        ("refused_by_breaker", notices.refused_by_breaker),
        ("dropped", notices.dropped),
    ] {
        counter!("swarm_escalation_notices_total", "outcome" => outcome).absolute(count);
    }
    describe_counter!(
        "swarm_escalation_notice_tries_total",
        "POSTs made to `[approvals] notify_url` since start, retries included."
    );
    counter!("swarm_escalation_notice_tries_total").absolute(notices.tries);
}

fn record_refused(refused: &[(Limit, u64)]) {
    describe_counter!(
        "swarm_http_refused_total",
        "Requests answered 429 by the API's limits since start, by limit (`quota`, \
         `auth_failures`, `backlog`)."
    );
    for (limit, count) in refused {
        counter!("swarm_http_refused_total", "limit" => limit.label()).absolute(*count);
    }
}

fn record_scheduler(stats: &SchedulerStats, depths: &[(Capability, u64)]) {
    describe_gauge!("swarm_objectives_running", "Objectives not yet ended.");
    gauge!("swarm_objectives_running").set(stats.objectives_running as f64);
    describe_counter!(
        "swarm_objectives_ended_total",
        "Objectives ended since the coordinator started."
    );
    counter!("swarm_objectives_ended_total").absolute(stats.objectives_ended);
    describe_gauge!("swarm_tasks_queued", "Tasks waiting for an agent.");
    gauge!("swarm_tasks_queued").set(stats.tasks_queued as f64);
    describe_gauge!(
        "swarm_tasks_queued_by_capability",
        "Tasks waiting for an agent, per capability."
    );
    for (capability, depth) in depths {
        gauge!("swarm_tasks_queued_by_capability", "capability" => capability.as_str().to_owned())
            .set(*depth as f64);
    }
    describe_gauge!("swarm_tasks_running", "Attempts running on agents.");
    gauge!("swarm_tasks_running").set(stats.tasks_running as f64);
    describe_gauge!(
        "swarm_tasks_in_review",
        "Tasks waiting for a person's decision."
    );
    gauge!("swarm_tasks_in_review").set(stats.tasks_in_review as f64);
    describe_gauge!(
        "swarm_tasks_waiting",
        "`wait` tasks waiting for their event."
    );
    gauge!("swarm_tasks_waiting").set(stats.tasks_waiting as f64);
    describe_gauge!(
        "swarm_events_kept",
        "Posted events kept because no `wait` task consumed them yet."
    );
    gauge!("swarm_events_kept").set(stats.events_kept as f64);
    describe_gauge!(
        "swarm_events_unwritten",
        "Events recorded and not yet committed to the durable log (the writer's queue)."
    );
    gauge!("swarm_events_unwritten").set(stats.events_unwritten as f64);
    describe_counter!(
        "swarm_allocations_total",
        "Attempts handed to agents since the coordinator started."
    );
    counter!("swarm_allocations_total").absolute(stats.allocations);
    describe_counter!(
        "swarm_tasks_succeeded_total",
        "Tasks that succeeded since the coordinator started."
    );
    counter!("swarm_tasks_succeeded_total").absolute(stats.tasks_succeeded);
    describe_counter!(
        "swarm_tasks_failed_total",
        "Tasks that failed for good since the coordinator started."
    );
    counter!("swarm_tasks_failed_total").absolute(stats.tasks_failed);
    describe_counter!(
        "swarm_attempts_failed_total",
        "Attempts that failed since the coordinator started."
    );
    counter!("swarm_attempts_failed_total").absolute(stats.attempts_failed);
    describe_counter!(
        "swarm_fenced_results_total",
        "Results dropped since the coordinator started because their attempt was not current \
         (each recorded in its objective's chain of work as `result_fenced`)."
    );
    counter!("swarm_fenced_results_total").absolute(stats.fenced_results);
}

fn record_agents(agents: &[AgentMetrics]) {
    describe_gauge!("swarm_agents", "Registered agents.");
    gauge!("swarm_agents").set(agents.len() as f64);
    describe_gauge!(
        "swarm_agent_health",
        "1 for the agent's current health, 0 for the others."
    );
    describe_gauge!(
        "swarm_agent_in_flight",
        Unit::Count,
        "Attempts held on the agent."
    );
    describe_gauge!(
        "swarm_agent_capacity",
        Unit::Count,
        "Attempts the agent may hold at once."
    );
    describe_counter!(
        "swarm_agent_restarts_total",
        "Times the supervisor restarted the agent's actor since it was registered."
    );
    describe_gauge!(
        "swarm_agent_breaker_state",
        "1 for the state the agent's circuit breaker is in, 0 for the others (agents with a \
         breaker only)."
    );
    describe_gauge!(
        "swarm_agent_limiter_limit",
        "The agent's quota per minute (agents with that quota only)."
    );
    describe_gauge!(
        "swarm_agent_limiter_used",
        "What the agent used of its quota within the last 60 seconds."
    );
    describe_counter!(
        "swarm_agent_limiter_waits_total",
        "Calls the agent's rate limiter granted only after a wait."
    );
    for agent in agents {
        let descriptor = &agent.snapshot.descriptor;
        let id = descriptor.id.to_string();
        let name = descriptor.name.clone();
        for health in HEALTHS {
            let value = if health == agent.snapshot.health {
                1.0
            } else {
                0.0
            };
            gauge!(
                "swarm_agent_health",
                "agent" => id.clone(),
                "name" => name.clone(),
                "health" => health_name(health)
            )
            .set(value);
        }
        gauge!("swarm_agent_in_flight", "agent" => id.clone(), "name" => name.clone())
            .set(f64::from(agent.snapshot.in_flight));
        gauge!("swarm_agent_capacity", "agent" => id.clone(), "name" => name.clone())
            .set(f64::from(descriptor.max_concurrency));
        counter!("swarm_agent_restarts_total", "agent" => id.clone(), "name" => name.clone())
            .absolute(u64::from(agent.restarts));
        if let Some(breaker) = agent.status.breaker {
            let current = breaker_name(breaker);
            for state in BREAKER_STATES {
                gauge!(
                    "swarm_agent_breaker_state",
                    "agent" => id.clone(),
                    "name" => name.clone(),
                    "state" => state
                )
                .set(if state == current { 1.0 } else { 0.0 });
            }
        }
        if let Some(limiter) = agent.status.limiter {
            let quotas = [("requests", limiter.requests), ("tokens", limiter.tokens)];
            for (quota, QuotaUse { per_minute, used }) in
                quotas.into_iter().filter_map(|(q, u)| Some((q, u?)))
            {
                let labels = [
                    ("agent", id.clone()),
                    ("name", name.clone()),
                    ("quota", quota.to_owned()),
                ];
                gauge!("swarm_agent_limiter_limit", &labels).set(f64::from(per_minute));
                gauge!("swarm_agent_limiter_used", &labels).set(used as f64);
            }
            counter!("swarm_agent_limiter_waits_total", "agent" => id.clone(), "name" => name.clone())
                .absolute(limiter.waits);
        }
    }
}

/// `swarm_allocation_latency_seconds` as a Prometheus histogram: cumulative `_bucket`s with
/// `le` labels, then `_sum` and `_count`.
fn write_latency_histogram(text: &mut String, histogram: &LatencyHistogram) {
    const NAME: &str = "swarm_allocation_latency_seconds";
    start_family(
        text,
        NAME,
        "histogram",
        "Time from a task becoming ready (or ready again, after a retry backoff or a lost \
         attempt) to its attempt being handed to an agent.",
    );
    for (bound, count) in histogram.cumulative() {
        let le = match bound {
            Some(bound) => bound.as_secs_f64().to_string(),
            None => "+Inf".to_owned(),
        };
        let _ = writeln!(text, "{NAME}_bucket{{le=\"{le}\"}} {count}");
    }
    let sum = histogram.sum_ns as f64 / 1e9;
    let _ = writeln!(text, "{NAME}_sum {sum}");
    let _ = writeln!(text, "{NAME}_count {}", histogram.count);
}

/// `swarm_agent_limiter_wait_seconds_total`, per agent with a limiter.
fn write_limiter_wait_seconds(text: &mut String, agents: &[AgentMetrics]) {
    const NAME: &str = "swarm_agent_limiter_wait_seconds_total";
    let limited: Vec<(&AgentMetrics, u64)> = agents
        .iter()
        .filter_map(|a| Some((a, a.status.limiter?.waited_ms)))
        .collect();
    if limited.is_empty() {
        return;
    }
    start_family(
        text,
        NAME,
        "counter",
        "Time calls spent waiting in the agent's rate limiter.",
    );
    for (agent, waited_ms) in limited {
        let descriptor = &agent.snapshot.descriptor;
        let _ = writeln!(
            text,
            "{NAME}{{agent=\"{}\",name=\"{}\"}} {}",
            descriptor.id,
            escape_label(&descriptor.name),
            waited_ms as f64 / 1000.0
        );
    }
}

/// `swarm_cost_usd_total` (in dollars, fractional, so written by hand) and
/// `swarm_unpriced_tokens_total`, per model agent and its account (`""` without one).
fn write_cost(text: &mut String, agents: &[AgentMetrics]) {
    let spending: Vec<(&AgentMetrics, Spent)> = agents
        .iter()
        .filter_map(|a| Some((a, a.status.spent?)))
        .collect();
    if spending.is_empty() {
        return;
    }
    let labels = |agent: &AgentMetrics| {
        let descriptor = &agent.snapshot.descriptor;
        format!(
            "agent=\"{}\",name=\"{}\",account=\"{}\"",
            descriptor.id,
            escape_label(&descriptor.name),
            escape_label(agent.status.account.as_deref().unwrap_or_default())
        )
    };
    const COST: &str = "swarm_cost_usd_total";
    start_family(
        text,
        COST,
        "counter",
        "What the agent's calls to priced models cost, in US dollars, at the `[prices]` of \
         swarm.toml.",
    );
    for (agent, spent) in &spending {
        let dollars = Usd(spent.cost_usd_micros).dollars();
        let _ = writeln!(text, "{COST}{{{}}} {dollars}", labels(agent));
    }
    const UNPRICED: &str = "swarm_unpriced_tokens_total";
    start_family(
        text,
        UNPRICED,
        "counter",
        "Tokens of the agent's calls to models without a price (their cost is unknown).",
    );
    for (agent, spent) in &spending {
        let _ = writeln!(
            text,
            "{UNPRICED}{{{}}} {}",
            labels(agent),
            spent.unpriced_tokens
        );
    }
}

fn start_family(text: &mut String, name: &str, kind: &str, help: &str) {
    if !text.is_empty() && !text.ends_with("\n\n") {
        text.push('\n');
    }
    let _ = writeln!(text, "# HELP {name} {help}");
    let _ = writeln!(text, "# TYPE {name} {kind}");
}

/// A label value as the text format requires: backslash, double quote and newline escaped.
fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

fn health_name(health: Health) -> &'static str {
    match health {
        Health::Up => "up",
        Health::Degraded => "degraded",
        Health::Down => "down",
        Health::Draining => "draining",
    }
}

fn breaker_name(breaker: BreakerStatus) -> &'static str {
    match breaker {
        BreakerStatus::Closed => "closed",
        BreakerStatus::Open { .. } => "open",
        BreakerStatus::HalfOpen => "half_open",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use swarm_protocol::{AgentDescriptor, AgentId};

    use super::*;

    /// Every sample line of `text`: its name, labels (as written) and value.
    fn samples(text: &str) -> Vec<(String, String, f64)> {
        text.lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let (name, labels) = match series.split_once('{') {
                    Some((name, labels)) => (name, labels.strip_suffix('}').unwrap()),
                    None => (series, ""),
                };
                (name.to_owned(), labels.to_owned(), value.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn render_writes_every_counter_and_agent() {
        let mut allocation_latency = LatencyHistogram::default();
        for micros in [5, 7, 40, 2_000_000] {
            allocation_latency.record(std::time::Duration::from_micros(micros));
        }
        let stats = SchedulerStats {
            objectives_running: 2,
            objectives_ended: 5,
            tasks_queued: 3,
            tasks_running: 1,
            allocations: 9,
            tasks_succeeded: 7,
            attempts_failed: 2,
            tasks_in_review: 4,
            tasks_failed: 1,
            tasks_waiting: 6,
            events_kept: 8,
            events_unwritten: 9,
            fenced_results: 11,
            allocation_latency,
        };
        let depths = [(Capability::new("work").unwrap(), 3)];
        let snapshot = |id: u64, name: &str| AgentSnapshot {
            descriptor: AgentDescriptor {
                id: AgentId(id),
                name: name.into(),
                capabilities: vec![Capability::new("work").unwrap()],
                max_concurrency: 8,
                labels: Default::default(),
                cost_hint: None,
                description: None,
            },
            health: Health::Degraded,
            in_flight: 1,
        };
        let plain = AgentMetrics {
            snapshot: snapshot(4, "w"),
            restarts: 2,
            status: AgentStatus::default(),
        };
        let model = AgentMetrics {
            snapshot: snapshot(5, "m \"x\""),
            restarts: 0,
            status: AgentStatus {
                breaker: Some(BreakerStatus::Open { probe_in_ms: 900 }),
                limiter: Some(swarm_protocol::LimiterStatus {
                    requests: Some(QuotaUse {
                        per_minute: 60,
                        used: 12,
                    }),
                    tokens: None,
                    granted: 30,
                    waits: 3,
                    waited_ms: 1_500,
                    waiting: 0,
                    paused_for_ms: None,
                }),
                account: Some("main".into()),
                spent: Some(Spent {
                    cost_usd_micros: 1_250_000,
                    unpriced_tokens: 40,
                }),
                remote: None,
            },
        };
        let refused = [
            (Limit::Quota, 4),
            (Limit::AuthFailures, 2),
            (Limit::Backlog, 0),
        ];
        let notices = NotifyStats {
            delivered: 3,
            tries: 7,
            failed: 1,
            refused_by_breaker: 2,
            dropped: 0,
        };
        let remote = HostStatus {
            connected: false,
            agents: 3,
            reconnects: 2,
            heartbeats_missed: 1,
            fenced: 4,
            leases_lost: 5,
            attempts: 60,
        };
        let text = render(
            &stats,
            &depths,
            &[plain, model],
            &refused,
            Some(notices),
            Some(remote),
        );
        let samples = samples(&text);
        let value = |name: &str, labels: &str| {
            samples
                .iter()
                .find(|(n, l, _)| n == name && l == labels)
                .unwrap_or_else(|| panic!("no {name}{{{labels}}} in\n{text}"))
                .2
        };
        assert_eq!(value("swarm_http_refused_total", "limit=\"quota\""), 4.0);
        assert_eq!(value("swarm_http_refused_total", "limit=\"backlog\""), 0.0);
        assert_eq!(
            value("swarm_escalation_notices_total", "outcome=\"delivered\""),
            3.0
        );
        assert_eq!(
            value(
                "swarm_escalation_notices_total",
                "outcome=\"refused_by_breaker\""
            ),
            2.0
        );
        assert_eq!(value("swarm_escalation_notice_tries_total", ""), 7.0);
        assert_eq!(value("swarm_remote_nats_connected", ""), 0.0);
        assert_eq!(value("swarm_remote_agents", ""), 3.0);
        assert_eq!(value("swarm_remote_nats_reconnects_total", ""), 2.0);
        assert_eq!(value("swarm_remote_heartbeats_missed_total", ""), 1.0);
        assert_eq!(value("swarm_remote_fenced_results_total", ""), 4.0);
        assert_eq!(value("swarm_remote_leases_lost_total", ""), 5.0);
        assert_eq!(value("swarm_objectives_running", ""), 2.0);
        assert_eq!(value("swarm_objectives_ended_total", ""), 5.0);
        assert_eq!(value("swarm_tasks_succeeded_total", ""), 7.0);
        assert_eq!(value("swarm_tasks_failed_total", ""), 1.0);
        assert_eq!(value("swarm_tasks_in_review", ""), 4.0);
        assert_eq!(value("swarm_tasks_waiting", ""), 6.0);
        assert_eq!(value("swarm_events_kept", ""), 8.0);
        assert_eq!(value("swarm_events_unwritten", ""), 9.0);
        assert_eq!(value("swarm_attempts_failed_total", ""), 2.0);
        assert_eq!(value("swarm_fenced_results_total", ""), 11.0);
        assert_eq!(value("swarm_allocations_total", ""), 9.0);
        assert_eq!(
            value("swarm_tasks_queued_by_capability", "capability=\"work\""),
            3.0
        );
        assert_eq!(
            value(
                "swarm_agent_health",
                "agent=\"A4\",name=\"w\",health=\"degraded\""
            ),
            1.0
        );
        assert_eq!(
            value(
                "swarm_agent_health",
                "agent=\"A4\",name=\"w\",health=\"up\""
            ),
            0.0
        );
        assert_eq!(
            value("swarm_agent_in_flight", "agent=\"A4\",name=\"w\""),
            1.0
        );
        assert_eq!(
            value("swarm_agent_capacity", "agent=\"A4\",name=\"w\""),
            8.0
        );
        assert_eq!(
            value("swarm_agent_restarts_total", "agent=\"A4\",name=\"w\""),
            2.0
        );
        assert!(text.contains("# TYPE swarm_tasks_succeeded_total counter"));

        // The model agent: breaker, quota, waits; the plain one has none of them.
        let m = "agent=\"A5\",name=\"m \\\"x\\\"\"";
        for (state, expected) in [("closed", 0.0), ("open", 1.0), ("half_open", 0.0)] {
            assert_eq!(
                value(
                    "swarm_agent_breaker_state",
                    &format!("{m},state=\"{state}\"")
                ),
                expected
            );
        }
        assert_eq!(
            value(
                "swarm_agent_limiter_limit",
                &format!("{m},quota=\"requests\"")
            ),
            60.0
        );
        assert_eq!(
            value(
                "swarm_agent_limiter_used",
                &format!("{m},quota=\"requests\"")
            ),
            12.0
        );
        assert_eq!(value("swarm_agent_limiter_waits_total", m), 3.0);
        assert_eq!(value("swarm_agent_limiter_wait_seconds_total", m), 1.5);
        let spender = format!("{m},account=\"main\"");
        assert_eq!(value("swarm_cost_usd_total", &spender), 1.25);
        assert_eq!(value("swarm_unpriced_tokens_total", &spender), 40.0);
        assert!(text.contains("# TYPE swarm_cost_usd_total counter"));
        assert!(
            !samples
                .iter()
                .any(|(n, l, _)| n == "swarm_cost_usd_total" && l.contains("A4"))
        );
        assert!(text.contains("# TYPE swarm_agent_limiter_wait_seconds_total counter"));
        assert!(!samples.iter().any(|(n, l, _)| {
            (n.starts_with("swarm_agent_breaker") || n.starts_with("swarm_agent_limiter"))
                && l.contains("A4")
        }));

        // The histogram: cumulative buckets, then the sum and the count.
        assert!(text.contains("# TYPE swarm_allocation_latency_seconds histogram"));
        let bucket = |le: &str| {
            value(
                "swarm_allocation_latency_seconds_bucket",
                &format!("le=\"{le}\""),
            )
        };
        assert_eq!(bucket("0.00001"), 2.0);
        assert_eq!(bucket("0.00005"), 3.0);
        assert_eq!(bucket("1"), 3.0);
        assert_eq!(bucket("5"), 4.0);
        assert_eq!(bucket("+Inf"), 4.0);
        assert_eq!(value("swarm_allocation_latency_seconds_count", ""), 4.0);
        let sum = value("swarm_allocation_latency_seconds_sum", "");
        assert!((sum - 2.000052).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }
}
