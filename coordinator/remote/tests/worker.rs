//! The worker's side against a real `nats-server`, with a small coordinator written here: it
//! answers announcements and heartbeats, creates the streams and the agent's consumer as the
//! protocol says, publishes attempts and reads results. Every wait is on a message (a
//! progress report, an acknowledgement, a result), never on a sleep.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{Client, Subscriber};
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};
use swarm_agents::{Agent, TaskContext};
use swarm_protocol::remote::{
    self, Announce, AnnounceReply, Attempt, AttemptId, AttemptResult, Heartbeat, HeartbeatReply,
    Leave, LeaveMode, Outcome, PROTOCOL_VERSION, Progress, ProtocolVersion, TextDelta,
    VersionMismatch,
};
use swarm_protocol::{
    AgentId, Capability, FailureKind, ObjectiveId, Task, TaskId, TaskKey, TaskOutcome,
};
use swarm_remote::{Error, HostedAgent, Subjects, Worker, WorkerOptions};
use swarm_testkit::{NatsServer, PATIENCE};
use tokio::sync::Semaphore;

const LEASE_MS: u64 = 60_000;

/// The test's agent: what it does is said by its input's `op`; `runs` counts its attempts and
/// `gate` lets the test step it.
struct Scripted {
    runs: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
}

impl Scripted {
    async fn step(&self) {
        self.gate.acquire().await.unwrap().forget();
    }
}

impl Agent for Scripted {
    async fn run(&self, task: Task, ctx: TaskContext) -> TaskOutcome {
        self.runs.fetch_add(1, Ordering::SeqCst);
        match task.input["op"].as_str().unwrap_or_default() {
            "echo" => TaskOutcome::success(json!({"echo": task.input["text"]})),
            "fail" => TaskOutcome::Failed {
                kind: FailureKind::Transient,
                message: "the model server answered 429".into(),
                partial_output: None,
                usage: None,
                retry_after: Some(Duration::from_secs(2)),
            },
            "block" => {
                self.step().await;
                TaskOutcome::success(json!("unblocked"))
            }
            "partial" => {
                ctx.set_partial(json!({"step": 1}));
                self.step().await;
                ctx.set_partial(json!("Hello"));
                self.step().await;
                ctx.append_text(" world");
                self.step().await;
                TaskOutcome::success(json!("Hello world"))
            }
            "stall" => {
                ctx.set_partial(json!({"step": 0}));
                std::future::pending().await
            }
            other => TaskOutcome::failure(FailureKind::Permanent, format!("no op {other:?}")),
        }
    }
}

/// The coordinator's side, as small as the protocol allows.
struct Fake {
    client: Client,
    js: jetstream::Context,
    subjects: Subjects,
    announces: Subscriber,
    leaves: Subscriber,
    progress: Subscriber,
    acks: Subscriber,
    /// The heartbeats, when the test answers them itself.
    heartbeats: Option<Subscriber>,
}

impl Fake {
    /// Connects, subscribes, answers every heartbeat with `continue`; creates the attempts
    /// stream, and the results stream unless `results` is false.
    async fn start(server: &NatsServer, results: bool) -> Self {
        Self::start_with(server, results, true).await
    }

    /// [`Fake::start`], leaving the heartbeats to the test unless `continue_beats`.
    async fn start_with(server: &NatsServer, results: bool, continue_beats: bool) -> Self {
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = jetstream::new(client.clone());
        let subjects = Subjects::new("swarm");
        js.create_stream(stream::Config {
            name: subjects.attempts_stream(),
            subjects: vec![subjects.all_attempts()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .unwrap();
        let mut fake = Self {
            heartbeats: None,
            announces: client.subscribe(subjects.announce()).await.unwrap(),
            leaves: client.subscribe(subjects.leave()).await.unwrap(),
            progress: client.subscribe(subjects.all_progress()).await.unwrap(),
            acks: client
                .subscribe(format!("$JS.ACK.{}.>", subjects.attempts_stream()))
                .await
                .unwrap(),
            client: client.clone(),
            js,
            subjects: subjects.clone(),
        };
        let mut beats = client.subscribe(subjects.heartbeat()).await.unwrap();
        if !continue_beats {
            fake.heartbeats = Some(beats);
        } else {
            tokio::spawn(async move {
                while let Some(beat) = beats.next().await {
                    let answer = remote::encode(&HeartbeatReply::Continue).unwrap();
                    if let Some(reply) = beat.reply {
                        let _ = client.publish(reply, answer.into()).await;
                    }
                }
            });
        }
        if results {
            fake.create_results().await;
        }
        fake.client.flush().await.unwrap();
        fake
    }

    async fn create_results(&self) {
        let results = self
            .js
            .create_stream(stream::Config {
                name: self.subjects.results_stream(),
                subjects: vec![self.subjects.results()],
                retention: stream::RetentionPolicy::WorkQueue,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .unwrap();
        results
            .create_consumer(consumer::pull::Config {
                durable_name: Some("coordinator".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .unwrap();
    }

    /// Takes the next announcement and answers it with `answer`.
    async fn answer_announce(&mut self, answer: &AnnounceReply) -> Announce {
        let request = within(self.announces.next()).await.unwrap();
        let announce: Announce = remote::decode(&request.payload).unwrap();
        self.client
            .publish(
                request.reply.unwrap(),
                remote::encode(answer).unwrap().into(),
            )
            .await
            .unwrap();
        announce
    }

    /// Takes the next announcement and accepts it as `agent`, with the agent's consumer.
    async fn accept(&mut self, agent: AgentId) -> Announce {
        let name = self.subjects.attempts_consumer(agent);
        self.js
            .get_stream(self.subjects.attempts_stream())
            .await
            .unwrap()
            .create_consumer(consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: self.subjects.attempts(agent),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_millis(LEASE_MS),
                max_ack_pending: 4,
                ..Default::default()
            })
            .await
            .unwrap();
        self.answer_announce(&AnnounceReply::Accepted {
            agent,
            protocol_version: PROTOCOL_VERSION,
            heartbeat_interval_ms: 60_000,
            lease_ms: LEASE_MS,
            attempts_subject: self.subjects.attempts(agent),
            attempts_consumer: name,
        })
        .await
    }

    /// Publishes `attempt` to its agent's subject (as a new message each time).
    async fn publish(&self, attempt: &Attempt) {
        self.js
            .publish(
                self.subjects.attempts(attempt.agent),
                remote::encode(attempt).unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// The next result in the results stream, acknowledged.
    async fn result(&self) -> AttemptResult {
        // A request made while the connection comes back times out: ask again, within PATIENCE.
        let consumer: consumer::PullConsumer = within(async {
            loop {
                match self
                    .js
                    .get_consumer_from_stream("coordinator", self.subjects.results_stream())
                    .await
                {
                    Ok(consumer) => break consumer,
                    Err(err) => eprintln!("the results consumer: {err}; asking again"),
                }
            }
        })
        .await;
        let mut batch = consumer
            .batch()
            .max_messages(1)
            .expires(PATIENCE)
            .messages()
            .await
            .unwrap();
        let message = within(batch.next()).await.unwrap().unwrap();
        message.ack().await.unwrap();
        remote::decode(&message.payload).unwrap()
    }

    /// How many results the results stream holds.
    async fn results_stored(&self) -> u64 {
        let mut stream = self
            .js
            .get_stream(self.subjects.results_stream())
            .await
            .unwrap();
        stream.info().await.unwrap().state.messages
    }

    /// The next progress report that satisfies `pick`.
    async fn progress_where(&mut self, pick: impl Fn(&Progress) -> bool) -> Progress {
        loop {
            let message = within(self.progress.next()).await.unwrap();
            let progress: Progress = remote::decode(&message.payload).unwrap();
            if pick(&progress) {
                return progress;
            }
        }
    }

    /// Waits for the next final acknowledgement (`+ACK`) of an attempt's message.
    async fn acked(&mut self) {
        loop {
            let message = within(self.acks.next()).await.unwrap();
            if &message.payload[..] == b"+ACK" {
                return;
            }
        }
    }

    /// The next heartbeat, and where to answer it.
    async fn heartbeat(&mut self) -> (Heartbeat, async_nats::Subject) {
        let beats = self.heartbeats.as_mut().unwrap();
        let message = within(beats.next()).await.unwrap();
        (
            remote::decode(&message.payload).unwrap(),
            message.reply.unwrap(),
        )
    }

    async fn answer_heartbeat(&self, to: async_nats::Subject, answer: &HeartbeatReply) {
        self.client
            .publish(to, remote::encode(answer).unwrap().into())
            .await
            .unwrap();
    }

    async fn leave(&mut self) -> Leave {
        let message = within(self.leaves.next()).await.unwrap();
        remote::decode(&message.payload).unwrap()
    }
}

async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("the awaited message never came")
}

struct Setup {
    server: NatsServer,
    fake: Fake,
    worker: Worker,
    runs: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
}

/// A server, the fake coordinator, and a worker hosting one scripted agent accepted as A7.
async fn setup(results: bool, max_concurrency: u32) -> Setup {
    setup_with(results, max_concurrency, true).await
}

/// [`setup`], leaving the heartbeats to the test unless `continue_beats`.
async fn setup_with(results: bool, max_concurrency: u32, continue_beats: bool) -> Setup {
    let server = NatsServer::start();
    let mut fake = Fake::start_with(&server, results, continue_beats).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let worker = start_worker(&server, &runs, &gate, max_concurrency).await;
    let announce = fake.accept(AgentId(7)).await;
    assert_eq!(announce.name, "scripted");
    assert_eq!(announce.session, "s-1");
    assert_eq!(announce.host, "test-host");
    assert_eq!(announce.max_concurrency, max_concurrency);
    assert_eq!(
        worker.announced().await.unwrap(),
        vec![("scripted".to_owned(), AgentId(7))]
    );
    Setup {
        server,
        fake,
        worker,
        runs,
        gate,
    }
}

async fn start_worker(
    server: &NatsServer,
    runs: &Arc<AtomicUsize>,
    gate: &Arc<Semaphore>,
    max_concurrency: u32,
) -> Worker {
    let client = async_nats::connect(server.url()).await.unwrap();
    let agent = HostedAgent {
        name: "scripted".into(),
        capabilities: vec![Capability::new("test").unwrap()],
        max_concurrency,
        description: Some("does what its input says".into()),
        labels: Default::default(),
        agent: Arc::new(Scripted {
            runs: runs.clone(),
            gate: gate.clone(),
        }),
    };
    let options = WorkerOptions {
        host: "test-host".into(),
        session: "s-1".into(),
    };
    Worker::start(client, Subjects::new("swarm"), vec![agent], options)
        .await
        .unwrap()
}

fn attempt(task: u64, input: Value) -> Attempt {
    let id = AttemptId {
        objective: ObjectiveId::new(),
        task: TaskId(task),
        number: 1,
    };
    Attempt {
        attempt: id,
        agent: AgentId(7),
        key: TaskKey::new("t").unwrap(),
        capability: Capability::new("test").unwrap(),
        idempotency_key: id.idempotency_key(),
        input: Arc::new(input),
        upstream: Default::default(),
        idle_timeout_ms: None,
        hard_timeout_ms: None,
        priority: 0,
        trace: None,
    }
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn an_attempt_runs_and_its_message_is_acknowledged_only_once_its_result_is_stored() {
    let Setup {
        server: _server,
        mut fake,
        worker,
        gate,
        ..
    } = setup(true, 2).await;
    let sent = attempt(1, json!({"op": "block"}));
    fake.publish(&sent).await;
    let started = fake.progress_where(|_| true).await;
    assert_eq!(
        (started.attempt, started.agent, started.seq),
        (sent.attempt, AgentId(7), 1)
    );
    assert!(started.partial_output.is_none() && started.text.is_none());
    gate.add_permits(1);

    fake.acked().await;
    assert_eq!(
        fake.results_stored().await,
        1,
        "acknowledged before its result was stored"
    );
    let result = fake.result().await;
    assert_eq!((result.attempt, result.agent), (sent.attempt, AgentId(7)));
    assert_eq!(
        result.outcome,
        Outcome::Succeeded {
            output: json!("unblocked"),
            usage: None
        }
    );

    // An attempt that ends at once is answered by its result alone.
    let quick = attempt(2, json!({"op": "echo", "text": "hi"}));
    fake.publish(&quick).await;
    let result = fake.result().await;
    assert_eq!(
        (result.attempt, result.outcome),
        (
            quick.attempt,
            Outcome::Succeeded {
                output: json!({"echo": "hi"}),
                usage: None
            }
        )
    );
    worker.shutdown(true).await;
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn a_failure_keeps_its_kind_message_and_retry_after() {
    let Setup {
        server: _server,
        fake,
        worker,
        ..
    } = setup(true, 1).await;
    fake.publish(&attempt(2, json!({"op": "fail"}))).await;
    let result = fake.result().await;
    assert_eq!(
        result.outcome,
        Outcome::Failed {
            kind: FailureKind::Transient,
            message: "the model server answered 429".into(),
            partial_output: None,
            usage: None,
            retry_after_ms: Some(2000),
        }
    );
    worker.shutdown(false).await;
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn partial_output_and_streamed_text_are_reported_as_progress() {
    let Setup {
        server: _server,
        mut fake,
        worker,
        gate,
        ..
    } = setup(true, 1).await;
    let sent = attempt(3, json!({"op": "partial"}));
    fake.publish(&sent).await;
    let changed = |p: &Progress| p.partial_output.is_some() || p.text.is_some();

    let first = fake.progress_where(changed).await;
    assert_eq!(first.partial_output, Some(json!({"step": 1})));
    gate.add_permits(1);
    let second = fake.progress_where(changed).await;
    assert_eq!(second.partial_output, Some(json!("Hello")));
    assert!(second.seq > first.seq);
    gate.add_permits(1);
    let third = fake.progress_where(changed).await;
    assert_eq!(
        third.text,
        Some(TextDelta {
            offset: 5,
            delta: " world".into()
        }),
        "appended text goes as a delta from where the text stood"
    );
    // What the coordinator folds from the reports is the agent's text.
    let mut folded = None;
    for report in [&first, &second, &third] {
        report.apply(&mut folded);
    }
    assert_eq!(folded, Some(json!("Hello world")));
    gate.add_permits(1);
    let result = fake.result().await;
    assert!(
        matches!(&result.outcome, Outcome::Succeeded { output, .. } if output == "Hello world")
    );
    worker.shutdown(true).await;
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn a_repeated_delivery_never_runs_an_attempt_twice() {
    let Setup {
        server: _server,
        mut fake,
        worker,
        runs,
        gate,
        ..
    } = setup(true, 2).await;
    // Delivered again while it runs: not started again; the worker says it is alive.
    let sent = attempt(4, json!({"op": "block"}));
    fake.publish(&sent).await;
    fake.progress_where(|p| p.seq == 1).await;
    fake.publish(&sent).await;
    let beat = fake.progress_where(|p| p.attempt == sent.attempt).await;
    assert_eq!(
        beat.seq, 2,
        "the second delivery is answered with a sign of life"
    );
    gate.add_permits(1);
    let result = fake.result().await;
    assert!(matches!(result.outcome, Outcome::Succeeded { .. }));
    // Both deliveries are acknowledged once the result is stored.
    fake.acked().await;
    fake.acked().await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // Delivered again once finished: its kept result is published again, nothing runs.
    fake.publish(&sent).await;
    fake.acked().await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // A new attempt still runs (the same agent, the next message).
    fake.publish(&attempt(5, json!({"op": "echo", "text": "next"})))
        .await;
    let next = fake.result().await;
    assert_eq!(next.attempt.task, TaskId(5));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    worker.shutdown(true).await;
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn a_result_is_published_again_until_the_results_stream_stores_it() {
    let Setup {
        server: _server,
        mut fake,
        worker,
        ..
    } = setup(false, 1).await;
    // Sees every publish of a result, stored or not.
    let mut published = fake.client.subscribe("swarm.results").await.unwrap();
    fake.client.flush().await.unwrap();
    fake.publish(&attempt(6, json!({"op": "echo", "text": "later"})))
        .await;
    // There is no results stream yet: the publish is not stored, and it is tried again.
    within(published.next()).await.unwrap();
    // An acknowledgement sent before that publish would have reached this connection first.
    while let Some(Some(ack)) = fake.acks.next().now_or_never() {
        assert_ne!(
            &ack.payload[..],
            b"+ACK",
            "acknowledged before the result was stored"
        );
    }
    fake.create_results().await;
    fake.acked().await;
    let result = fake.result().await;
    assert!(
        matches!(&result.outcome, Outcome::Succeeded { output, .. } if output["echo"] == "later")
    );
    worker.shutdown(true).await;
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn the_worker_enforces_the_idle_timeout_and_keeps_the_partial_output() {
    let Setup {
        server: _server,
        fake,
        worker,
        ..
    } = setup(true, 1).await;
    let mut stalls = attempt(7, json!({"op": "stall"}));
    stalls.idle_timeout_ms = Some(200);
    fake.publish(&stalls).await;
    let result = fake.result().await;
    let Outcome::Failed {
        kind,
        partial_output,
        ..
    } = result.outcome
    else {
        panic!("expected a timeout, got {:?}", result.outcome);
    };
    assert_eq!(kind, FailureKind::Timeout);
    assert_eq!(partial_output, Some(json!({"step": 0})));
    worker.shutdown(false).await;
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn draining_leaves_first_then_finishes_what_runs() {
    let Setup {
        server: _server,
        mut fake,
        worker,
        gate,
        ..
    } = setup(true, 1).await;
    let sent = attempt(8, json!({"op": "block"}));
    fake.publish(&sent).await;
    fake.progress_where(|p| p.seq == 1).await;
    let stopping = tokio::spawn(worker.shutdown(true));
    let leave = fake.leave().await;
    assert_eq!(
        (leave.agent, leave.session.as_str(), leave.mode),
        (AgentId(7), "s-1", LeaveMode::Drain)
    );
    assert!(!stopping.is_finished());
    gate.add_permits(1);
    let result = fake.result().await;
    assert_eq!(result.attempt, sent.attempt);
    within(stopping).await.unwrap();
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn stopping_at_once_leaves_now() {
    let Setup {
        server: _server,
        mut fake,
        worker,
        ..
    } = setup(true, 1).await;
    fake.publish(&attempt(9, json!({"op": "block"}))).await;
    fake.progress_where(|p| p.seq == 1).await;
    within(worker.shutdown(false)).await;
    let leave = fake.leave().await;
    assert_eq!(leave.mode, LeaveMode::Now);
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn a_refused_announcement_surfaces_the_coordinators_message() {
    let server = NatsServer::start();
    let mut fake = Fake::start(&server, true).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let worker = start_worker(&server, &runs, &gate, 1).await;
    let newer = ProtocolVersion { major: 2, minor: 0 };
    let mismatch = newer.accepts(PROTOCOL_VERSION).unwrap_err();
    let announce = fake
        .answer_announce(&AnnounceReply::Refused {
            protocol_version: newer,
            message: mismatch.to_string(),
        })
        .await;
    assert_eq!(announce.protocol_version, PROTOCOL_VERSION);
    let err = worker.announced().await.unwrap_err();
    let Error::Refused { agent, message } = &err else {
        panic!("{err}");
    };
    assert_eq!(agent, "scripted");
    assert_eq!(
        *message,
        VersionMismatch {
            worker: PROTOCOL_VERSION,
            coordinator: newer
        }
        .to_string()
    );
    assert!(err.to_string().contains("protocol 1.0") && err.to_string().contains("protocol 2.0"));
    assert_eq!(worker.agents(), vec![("scripted".to_owned(), None)]);
    within(worker.ended()).await;
    worker.shutdown(true).await;
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn a_worker_that_starts_first_waits_for_the_coordinator() {
    let server = NatsServer::start();
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    // No one answers yet: the worker announces again and again (no responders).
    let worker = start_worker(&server, &runs, &gate, 1).await;
    assert_eq!(worker.agents(), vec![("scripted".to_owned(), None)]);
    let mut fake = Fake::start(&server, true).await;
    fake.accept(AgentId(3)).await;
    assert_eq!(
        worker.announced().await.unwrap(),
        vec![("scripted".to_owned(), AgentId(3))]
    );
    assert_eq!(
        worker.agents(),
        vec![("scripted".to_owned(), Some(AgentId(3)))]
    );
    worker.shutdown(true).await;
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn told_to_announce_again_the_worker_does_and_pulls_from_its_new_consumer() {
    let Setup {
        server: _server,
        mut fake,
        worker,
        ..
    } = setup_with(true, 1, false).await;
    let (beat, to) = fake.heartbeat().await;
    assert_eq!(
        (
            beat.agent,
            beat.session.as_str(),
            beat.in_flight,
            beat.health
        ),
        (AgentId(7), "s-1", 0, swarm_protocol::Health::Up)
    );
    // The coordinator restarted and does not know the agent any more.
    fake.answer_heartbeat(to, &HeartbeatReply::Announce).await;
    let again = fake.accept(AgentId(8)).await;
    assert_eq!(
        (again.name.as_str(), again.session.as_str()),
        ("scripted", "s-1")
    );
    let (beat, _) = fake.heartbeat().await;
    assert_eq!(beat.agent, AgentId(8));
    assert_eq!(
        worker.agents(),
        vec![("scripted".to_owned(), Some(AgentId(8)))]
    );
    let mut sent = attempt(10, json!({"op": "echo", "text": "again"}));
    sent.agent = AgentId(8);
    fake.publish(&sent).await;
    let result = fake.result().await;
    assert_eq!((result.attempt, result.agent), (sent.attempt, AgentId(8)));
    worker.shutdown(true).await;
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn told_to_drain_the_worker_finishes_what_runs_then_leaves() {
    let Setup {
        server: _server,
        mut fake,
        worker,
        gate,
        ..
    } = setup_with(true, 1, false).await;
    let (_, to) = fake.heartbeat().await;
    let sent = attempt(11, json!({"op": "block"}));
    fake.publish(&sent).await;
    fake.progress_where(|p| p.seq == 1).await;
    fake.answer_heartbeat(
        to,
        &HeartbeatReply::Drain {
            reason: "removed by an operator".into(),
        },
    )
    .await;
    gate.add_permits(1);
    let result = fake.result().await;
    assert_eq!(result.attempt, sent.attempt);
    let leave = fake.leave().await;
    assert_eq!((leave.agent, leave.mode), (AgentId(7), LeaveMode::Drain));
    within(worker.ended()).await;
    assert_eq!(worker.agents(), vec![("scripted".to_owned(), None)]);
    worker.shutdown(true).await;
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn a_result_finished_while_nats_is_down_is_stored_once_it_is_back() {
    let Setup {
        mut server,
        mut fake,
        worker,
        gate,
        runs,
        ..
    } = setup(true, 1).await;
    let sent = attempt(12, json!({"op": "block"}));
    fake.publish(&sent).await;
    fake.progress_where(|p| p.seq == 1).await;
    server.stop();
    // The attempt ends while the server is gone: its result waits in the worker.
    gate.add_permits(1);
    server.restart();
    let result = fake.result().await;
    assert_eq!(result.attempt, sent.attempt);
    assert!(matches!(result.outcome, Outcome::Succeeded { .. }));
    fake.acked().await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    worker.shutdown(true).await;
}
