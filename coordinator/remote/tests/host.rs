#![allow(clippy::unwrap_used)]
//! The coordinator's side against a real nats-server, with a worker written here from
//! `protocol/REMOTE.md` alone (raw NATS messages), so the host is held to the protocol, not to
//! the crate's own worker.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use serde_json::json;
use swarm_coordinator::Swarm;
use swarm_coordinator::config::NatsSection;
use swarm_protocol::remote::{
    self, Announce, AnnounceReply, Attempt, AttemptResult, Heartbeat, HeartbeatReply, Outcome,
    PROTOCOL_VERSION,
};
use swarm_protocol::{AgentId, Event, Objective, TaskOutcome, TaskSpec};
use swarm_remote::{Host, Subjects};
use swarm_testkit::{Events, NatsServer, PATIENCE, cap, key};

/// A worker speaking the protocol by hand.
struct RawWorker {
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    agent: AgentId,
    session: String,
    messages: consumer::pull::Stream,
    /// The idempotency keys of the attempts received: a redelivery is not run twice.
    seen: std::collections::HashSet<String>,
}

impl RawWorker {
    async fn announce(url: &str, name: &str, capability: &str, session: &str) -> Self {
        let client = async_nats::connect(url).await.unwrap();
        let subjects = Subjects::new("swarm");
        let announce = Announce {
            protocol_version: PROTOCOL_VERSION,
            name: name.into(),
            session: session.into(),
            capabilities: vec![cap(capability)],
            max_concurrency: 4,
            description: None,
            labels: Default::default(),
            host: "test-host".into(),
            cost_hint: None,
        };
        let reply = client
            .request(
                subjects.announce(),
                remote::encode(&announce).unwrap().into(),
            )
            .await
            .unwrap();
        let AnnounceReply::Accepted {
            agent,
            attempts_consumer,
            ..
        } = remote::decode(&reply.payload).unwrap()
        else {
            panic!("refused");
        };
        let js = jetstream::new(client.clone());
        let stream = js.get_stream(subjects.attempts_stream()).await.unwrap();
        let consumer: consumer::PullConsumer =
            stream.get_consumer(&attempts_consumer).await.unwrap();
        let messages = consumer.messages().await.unwrap();
        Self {
            client,
            js,
            subjects,
            agent,
            session: session.into(),
            messages,
            seen: Default::default(),
        }
    }

    async fn next(&mut self) -> (Attempt, jetstream::Message) {
        loop {
            let message = tokio::time::timeout(PATIENCE, self.messages.next())
                .await
                .expect("an attempt within the patience")
                .unwrap()
                .unwrap();
            let attempt: Attempt = remote::decode(&message.payload).unwrap();
            if self.seen.insert(attempt.idempotency_key.clone()) {
                return (attempt, message);
            }
        }
    }

    async fn finish(&self, attempt: &Attempt, outcome: TaskOutcome) {
        let result = AttemptResult {
            attempt: attempt.attempt,
            agent: self.agent,
            outcome: Outcome::from(outcome),
            duration_ms: 1,
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", attempt.idempotency_key.as_str());
        self.js
            .publish_with_headers(
                self.subjects.results(),
                headers,
                remote::encode(&result).unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    async fn heartbeat(&self) -> HeartbeatReply {
        let beat = Heartbeat {
            agent: self.agent,
            session: self.session.clone(),
            in_flight: 0,
            health: swarm_protocol::Health::Up,
            reason: None,
        };
        let reply = self
            .client
            .request(
                self.subjects.heartbeat(),
                remote::encode(&beat).unwrap().into(),
            )
            .await
            .unwrap();
        remote::decode(&reply.payload).unwrap()
    }
}

fn config(server: &NatsServer, lease: Duration) -> NatsSection {
    NatsSection {
        heartbeat_interval: Duration::from_millis(100),
        lease,
        ..NatsSection::for_url(server.url())
    }
}

async fn host(lease: Duration) -> (NatsServer, Arc<Swarm>, Events, Host) {
    let server = NatsServer::start();
    let (swarm, events) = swarm_testkit::start().await;
    let swarm = Arc::new(swarm);
    let host = Host::start(&swarm, &config(&server, lease)).await.unwrap();
    (server, swarm, events, host)
}

async fn end(swarm: Arc<Swarm>, host: Host) {
    host.stop().await;
    let swarm = Arc::into_inner(swarm).expect("the host let go of the swarm");
    swarm_testkit::finish(swarm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn a_remote_agent_is_an_agent_of_the_registry_and_runs_tasks() {
    let (_server, swarm, _events, host) = host(Duration::from_secs(30)).await;
    let mut worker = RawWorker::announce(&_server.url(), "echo-1", "echo", "s1").await;
    let snapshot = swarm.registry().snapshot(worker.agent).unwrap();
    assert_eq!(snapshot.descriptor.capabilities, vec![cap("echo")]);
    let live = swarm.live_agents().get(worker.agent).unwrap();
    let remote = live.instance.agent_status().remote.unwrap();
    assert_eq!(remote.host, "test-host");
    assert_eq!(remote.session, "s1");
    assert_eq!(worker.heartbeat().await, HeartbeatReply::Continue);

    let objective = swarm
        .submit(Objective::with_tasks(
            "echo",
            vec![TaskSpec::new(key("say"), cap("echo")).with_input(json!({"text": "hi"}))],
        ))
        .await
        .unwrap();
    let (attempt, message) = worker.next().await;
    assert_eq!(attempt.agent, worker.agent);
    assert_eq!(*attempt.input, json!({"text": "hi"}));
    worker
        .finish(&attempt, TaskOutcome::success(json!({"said": "hi"})))
        .await;
    message.ack().await.unwrap();
    let view = swarm.wait(objective, PATIENCE).await.unwrap();
    assert_eq!(view.status, swarm_protocol::ObjectiveStatus::Succeeded);
    assert_eq!(view.tasks[0].output, Some(json!({"said": "hi"})));
    assert_eq!(host.status().attempts, 1);
    end(swarm, host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn a_late_result_after_a_lost_lease_is_fenced_and_the_next_attempt_commits() {
    let (server, swarm, mut events, host) = host(Duration::from_millis(500)).await;
    let mut worker = RawWorker::announce(&server.url(), "slow-1", "slow", "s1").await;
    // Heartbeats keep the agent, while attempt 1 sends no progress and loses its lease.
    let beats = {
        let client = worker.client.clone();
        let beat = remote::encode(&Heartbeat {
            agent: worker.agent,
            session: "s1".into(),
            in_flight: 1,
            health: swarm_protocol::Health::Up,
            reason: None,
        })
        .unwrap();
        let subject = worker.subjects.heartbeat();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let _ = client.request(subject.clone(), beat.clone().into()).await;
            }
        })
    };
    let objective = swarm
        .submit(Objective::with_tasks(
            "slow",
            vec![TaskSpec::new(key("work"), cap("slow"))],
        ))
        .await
        .unwrap();
    let (first, _unacked) = worker.next().await;
    assert_eq!(first.attempt.number, 1);
    events
        .until("attempt 1 fails: its lease is lost", |e| {
            matches!(e, Event::TaskFailed { attempt: 1, .. })
        })
        .await;
    let (second, message) = worker.next().await;
    assert_eq!(second.attempt.number, 2);
    // Attempt 1's result comes late: it is fenced, never committed.
    worker
        .finish(&first, TaskOutcome::success(json!("late")))
        .await;
    worker
        .finish(&second, TaskOutcome::success(json!("current")))
        .await;
    message.ack().await.unwrap();
    let view = swarm.wait(objective, PATIENCE).await.unwrap();
    assert_eq!(view.tasks[0].output, Some(json!("current")));
    events
        .until("the late result is recorded as fenced", |e| {
            matches!(e, Event::ResultFenced { attempt: 1, .. })
        })
        .await;
    let status = host.status();
    assert_eq!(status.leases_lost, 1);
    assert_eq!(status.fenced, 1);
    beats.abort();
    end(swarm, host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn an_agent_whose_worker_stops_heartbeating_is_removed_and_its_work_runs_elsewhere() {
    let (server, swarm, mut events, host) = host(Duration::from_secs(30)).await;
    let mut dead = RawWorker::announce(&server.url(), "dead-1", "work", "s1").await;
    let objective = swarm
        .submit(Objective::with_tasks(
            "work",
            vec![TaskSpec::new(key("job"), cap("work"))],
        ))
        .await
        .unwrap();
    let (first, _) = dead.next().await;
    assert_eq!(first.attempt.number, 1);
    // No heartbeat comes: the agent is removed and its attempt re-queued.
    let dead_id = dead.agent;
    events
        .until(
            "the silent agent is removed",
            |e| matches!(e, Event::AgentDeregistered { agent, .. } if *agent == dead_id),
        )
        .await;
    assert!(swarm.registry().snapshot(dead_id).is_none());
    assert_eq!(dead.heartbeat().await, HeartbeatReply::Announce);
    let mut alive = RawWorker::announce(&server.url(), "alive-1", "work", "s2").await;
    let (again, message) = alive.next().await;
    assert_eq!(again.attempt.task, first.attempt.task);
    assert!(again.attempt.number > first.attempt.number);
    alive.finish(&again, TaskOutcome::success(json!(1))).await;
    message.ack().await.unwrap();
    let view = swarm.wait(objective, PATIENCE).await.unwrap();
    assert_eq!(view.status, swarm_protocol::ObjectiveStatus::Succeeded);
    assert_eq!(host.status().heartbeats_missed, 1);
    end(swarm, host).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn an_agent_lost_again_and_again_stays_down() {
    let (server, swarm, _events, host) = host(Duration::from_secs(30)).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let subjects = Subjects::new("swarm");
    let announce = |session: &str| Announce {
        protocol_version: PROTOCOL_VERSION,
        name: "flaky".into(),
        session: session.into(),
        capabilities: vec![cap("work")],
        max_concurrency: 1,
        description: None,
        labels: Default::default(),
        host: "test-host".into(),
        cost_hint: None,
    };
    // Each new session replaces the one before: three losses are allowed within the window.
    let mut replies = Vec::new();
    for session in ["s1", "s2", "s3", "s4", "s5"] {
        let reply = client
            .request(
                subjects.announce(),
                remote::encode(&announce(session)).unwrap().into(),
            )
            .await
            .unwrap();
        replies.push(remote::decode::<AnnounceReply>(&reply.payload).unwrap());
    }
    assert!(
        replies[..4]
            .iter()
            .all(|r| matches!(r, AnnounceReply::Accepted { .. })),
        "{replies:?}"
    );
    let AnnounceReply::Refused { message, .. } = &replies[4] else {
        panic!("the fifth session was accepted: {replies:?}");
    };
    assert!(message.contains("`flaky` was lost 4 times"), "{message}");
    // The agent is down: none of its sessions is in the registry.
    assert_eq!(swarm.registry().len(), 0);
    end(swarm, host).await;
}
