//! The remote worker example against a real `nats-server` and the coordinator's real side (a
//! swarm in this process with its NATS host): the word counter is announced, counts the
//! upstream texts of a task the swarm gives it (local echo agents' outputs), and leaves.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;

use serde_json::json;
use swarm_coordinator::config::NatsSection;
use swarm_protocol::{Objective, ObjectiveStatus, TaskSpec};
use swarm_remote::Host;
use swarm_testkit::{NatsServer, PATIENCE, cap, key};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn the_remote_word_counter_answers_a_task_of_the_swarm() {
    let server = NatsServer::start();
    let (swarm, _events) = swarm_testkit::start().await;
    let swarm = Arc::new(swarm);
    let config = NatsSection {
        prefix: "words".into(),
        ..NatsSection::for_url(server.url())
    };
    let host = Host::start(&swarm, &config).await.unwrap();
    let worker = swarm_examples::remote_worker::start(&server.url(), "words")
        .await
        .unwrap();
    let (name, agent) = worker.announced().await.unwrap()[0].clone();
    assert_eq!(name, swarm_examples::remote_worker::AGENT_NAME);
    assert!(swarm.registry().snapshot(agent).is_some());

    // Local echo agents give it texts to count, as upstream outputs.
    swarm_testkit::register(
        &swarm,
        "echo-0",
        &["echo"],
        4,
        swarm_agents::AgentFactory::shared(swarm_agents::EchoAgent),
    )
    .await;
    let objective = swarm
        .submit(Objective::with_tasks(
            "count words",
            vec![
                TaskSpec::new(key("a"), cap("echo")).with_input(json!("the quick brown fox")),
                TaskSpec::new(key("b"), cap("echo")).with_input(json!("jumps over")),
                TaskSpec::new(key("count"), cap("count")).after([key("a"), key("b")]),
            ],
        ))
        .await
        .unwrap();
    let view = swarm.wait(objective, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:?}");
    let count = view.tasks.iter().find(|t| t.key == key("count")).unwrap();
    assert_eq!(count.agent, Some(agent));
    assert_eq!(count.output, Some(json!({"words": 6})));
    worker.shutdown(true).await;
    host.stop().await;
    let swarm = Arc::into_inner(swarm).unwrap();
    swarm_testkit::finish(swarm).await;
}
