//! The remote worker example against a real `nats-server`, with the coordinator's side played
//! by the test: the word counter is announced, counts an attempt's upstream texts and leaves.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use serde_json::json;
use swarm_protocol::remote::{
    self, Announce, AnnounceReply, Attempt, AttemptId, AttemptResult, Outcome, PROTOCOL_VERSION,
};
use swarm_protocol::{AgentId, Capability, ObjectiveId, TaskId, TaskKey};
use swarm_remote::Subjects;
use swarm_testkit::{NatsServer, PATIENCE};

async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("the awaited message never came")
}

#[tokio::test]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn the_remote_word_counter_answers_an_attempt() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let subjects = Subjects::new("words");
    let attempts = js
        .create_stream(stream::Config {
            name: subjects.attempts_stream(),
            subjects: vec![subjects.all_attempts()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .unwrap();
    let results = js
        .create_stream(stream::Config {
            name: subjects.results_stream(),
            subjects: vec![subjects.results()],
            ..Default::default()
        })
        .await
        .unwrap()
        .create_consumer(consumer::pull::Config {
            durable_name: Some("coordinator".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut announces = client.subscribe(subjects.announce()).await.unwrap();
    client.flush().await.unwrap();

    let worker = swarm_examples::remote_worker::start(&server.url(), "words")
        .await
        .unwrap();
    let request = within(announces.next()).await.unwrap();
    let announce: Announce = remote::decode(&request.payload).unwrap();
    assert_eq!(announce.name, swarm_examples::remote_worker::AGENT_NAME);
    let agent = AgentId(1);
    attempts
        .create_consumer(consumer::pull::Config {
            durable_name: Some(subjects.attempts_consumer(agent)),
            filter_subject: subjects.attempts(agent),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let accepted = AnnounceReply::Accepted {
        agent,
        protocol_version: PROTOCOL_VERSION,
        heartbeat_interval_ms: 60_000,
        lease_ms: 30_000,
        attempts_subject: subjects.attempts(agent),
        attempts_consumer: subjects.attempts_consumer(agent),
    };
    client
        .publish(
            request.reply.unwrap(),
            remote::encode(&accepted).unwrap().into(),
        )
        .await
        .unwrap();
    assert_eq!(worker.announced().await.unwrap()[0].1, agent);

    let id = AttemptId {
        objective: ObjectiveId::new(),
        task: TaskId(3),
        number: 1,
    };
    let attempt = Attempt {
        attempt: id,
        agent,
        key: TaskKey::new("count").unwrap(),
        capability: Capability::new("count").unwrap(),
        idempotency_key: id.idempotency_key(),
        input: Arc::new(serde_json::Value::Null),
        upstream: [
            (TaskKey::new("a").unwrap(), json!("the quick brown fox")),
            (TaskKey::new("b").unwrap(), json!({"input": "jumps over"})),
        ]
        .into(),
        idle_timeout_ms: None,
        hard_timeout_ms: None,
        priority: 0,
        trace: None,
    };
    js.publish(
        subjects.attempts(agent),
        remote::encode(&attempt).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let mut batch = results
        .batch()
        .max_messages(1)
        .expires(PATIENCE)
        .messages()
        .await
        .unwrap();
    let message = within(batch.next()).await.unwrap().unwrap();
    let result: AttemptResult = remote::decode(&message.payload).unwrap();
    assert_eq!(result.attempt, id);
    assert_eq!(
        result.outcome,
        Outcome::Succeeded {
            output: json!({"words": 6}),
            usage: None
        }
    );
    worker.shutdown(true).await;
}
