//! `GET /metrics`: the swarm's state in the Prometheus text format.
//!
//! Nothing on the scheduler's hot path records a metric: a scrape asks the scheduler for its
//! counters and queue depths and reads the registry's snapshots, writes them into a recorder
//! made for this scrape, and renders it. So a scrape costs two scheduler round trips and one
//! pass over the agents, and an agent that left stops appearing at the next scrape (a
//! long-lived recorder would keep its last values).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::PrometheusBuilder;
use swarm_protocol::{Capability, Health, SchedulerStats};
use swarm_registry::AgentSnapshot;

use crate::http::AppState;
use crate::http::problem::{PROBLEM_JSON, Problem};

/// The media type of the Prometheus text format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

const HEALTHS: [Health; 4] = [Health::Up, Health::Degraded, Health::Down, Health::Draining];

/// The swarm's state in the Prometheus text format, gathered at scrape time.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "probes",
    operation_id = "metrics",
    responses(
        (status = 200, description = "Prometheus text exposition.", body = String,
         content_type = "text/plain; version=0.0.4"),
        (status = 503, description = "The coordinator is not available.", body = Problem,
         content_type = PROBLEM_JSON),
    ),
)]
pub(super) async fn scrape(State(state): State<AppState>) -> Result<Response, Problem> {
    let stats = state.swarm.stats().await?;
    let depths = state.swarm.queue_depths().await?;
    let agents = state.swarm.registry().snapshots();
    let mut response = render(&stats, &depths, &agents).into_response();
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
    agents: &[AgentSnapshot],
) -> String {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        record_scheduler(stats, depths);
        record_agents(agents);
    });
    handle.render()
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
        "swarm_attempts_failed_total",
        "Attempts that failed since the coordinator started."
    );
    counter!("swarm_attempts_failed_total").absolute(stats.attempts_failed);
}

fn record_agents(agents: &[AgentSnapshot]) {
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
    for agent in agents {
        let id = agent.descriptor.id.to_string();
        let name = agent.descriptor.name.clone();
        for health in HEALTHS {
            let value = if health == agent.health { 1.0 } else { 0.0 };
            gauge!(
                "swarm_agent_health",
                "agent" => id.clone(),
                "name" => name.clone(),
                "health" => health_name(health)
            )
            .set(value);
        }
        gauge!("swarm_agent_in_flight", "agent" => id.clone(), "name" => name.clone())
            .set(f64::from(agent.in_flight));
        gauge!("swarm_agent_capacity", "agent" => id, "name" => name)
            .set(f64::from(agent.descriptor.max_concurrency));
    }
}

fn health_name(health: Health) -> &'static str {
    match health {
        Health::Up => "up",
        Health::Degraded => "degraded",
        Health::Down => "down",
        Health::Draining => "draining",
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
        let stats = SchedulerStats {
            objectives_running: 2,
            objectives_ended: 5,
            tasks_queued: 3,
            tasks_running: 1,
            allocations: 9,
            tasks_succeeded: 7,
            attempts_failed: 2,
            ..SchedulerStats::default()
        };
        let depths = [(Capability::new("work").unwrap(), 3)];
        let agent = AgentSnapshot {
            descriptor: AgentDescriptor {
                id: AgentId(4),
                name: "w".into(),
                capabilities: vec![Capability::new("work").unwrap()],
                max_concurrency: 8,
                labels: Default::default(),
                cost_hint: None,
            },
            health: Health::Degraded,
            in_flight: 1,
        };
        let text = render(&stats, &depths, &[agent]);
        let samples = samples(&text);
        let value = |name: &str, labels: &str| {
            samples
                .iter()
                .find(|(n, l, _)| n == name && l == labels)
                .unwrap_or_else(|| panic!("no {name}{{{labels}}} in\n{text}"))
                .2
        };
        assert_eq!(value("swarm_objectives_running", ""), 2.0);
        assert_eq!(value("swarm_objectives_ended_total", ""), 5.0);
        assert_eq!(value("swarm_tasks_succeeded_total", ""), 7.0);
        assert_eq!(value("swarm_attempts_failed_total", ""), 2.0);
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
        assert!(text.contains("# TYPE swarm_tasks_succeeded_total counter"));
    }
}
