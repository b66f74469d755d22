//! Escalation notices: a review escalated by its deadline reaches a receiver on loopback as
//! its signed `TaskEscalated` record; a failing receiver gets retries and then trips the
//! breaker, which refuses the next notice without calling it; a receiver that refuses a
//! notice (a wrong secret) is not asked again; an escalation recorded while the swarm opened
//! (its deadline passed while the coordinator was down) is announced too.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};
use swarm_agents::model::breaker::BreakerConfig;
use swarm_coordinator::triggers::signature::{SIGNATURE_HEADER, verify};
use swarm_coordinator::{StoreConfig, Swarm, SwarmConfig};
use swarm_protocol::{Event, EventRecord, Objective, ObjectiveId, TaskId, TaskStatus};
use swarm_server::notify::{DELIVERY_HEADER, Notifier, NotifierConfig, NotifyStats};
use swarm_store::{EventStore, SqliteOptions, SqliteStore};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::common::PATIENCE;
use crate::common::api::*;

const SECRET: &[u8] = b"escalation-test-secret";

/// One request the receiver got: its delivery id, whether its signature matched, its body.
#[derive(Debug)]
struct Received {
    delivery: String,
    signed: bool,
    body: Value,
}

#[derive(Clone)]
struct Receiver {
    got: mpsc::UnboundedSender<Received>,
    /// What it answers to a well-signed request.
    answer: StatusCode,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let now_secs = swarm_agents::clock::system_now_ms() / 1000;
    let signed = verify(
        SECRET,
        header(SIGNATURE_HEADER),
        &body,
        now_secs,
        Duration::from_secs(300),
    )
    .is_ok();
    let _ = receiver.got.send(Received {
        delivery: header(DELIVERY_HEADER).unwrap_or_default().to_owned(),
        signed,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    if signed {
        receiver.answer
    } else {
        StatusCode::UNAUTHORIZED
    }
}

/// A receiver on a loopback port answering `answer` to well-signed notices: its URL, what it
/// got, and its stop.
async fn receiver(
    answer: StatusCode,
) -> (
    reqwest::Url,
    mpsc::UnboundedReceiver<Received>,
    oneshot::Sender<()>,
) {
    let (got, rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route("/escalations", post(receive))
        .with_state(Receiver { got, answer });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/escalations", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
    });
    (url.parse().unwrap(), rx, stop)
}

fn config(url: reqwest::Url, secret: &[u8]) -> NotifierConfig {
    NotifierConfig {
        url,
        secret: secret.into(),
        attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
        request_timeout: Duration::from_secs(10),
        breaker: BreakerConfig {
            consecutive_failures: 3,
            // Never half-open within the test: the breaker stays open once it opened.
            cool_down: Duration::from_secs(3600),
            cool_down_max: Duration::from_secs(3600),
            ..BreakerConfig::default()
        },
    }
}

fn escalated(seq: u64) -> Arc<EventRecord> {
    Arc::new(EventRecord {
        seq,
        at_ms: 1_700_000_000_000,
        event: Event::TaskEscalated {
            objective: ObjectiveId::new(),
            task: TaskId(seq),
            attempt: 1,
            escalation: 1,
            until_ms: 1_700_000_060_000,
        },
    })
}

async fn stats_until(notifier: &Notifier, what: impl Fn(&NotifyStats) -> bool) -> NotifyStats {
    let mut stats = notifier.stats();
    let reached = tokio::time::timeout(PATIENCE, async {
        *stats.wait_for(|s| what(s)).await.unwrap()
    })
    .await;
    reached.unwrap_or_else(|_| {
        panic!(
            "the notifier never got there: {:?}",
            *notifier.stats().borrow()
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalated_approval_is_announced_to_the_receiver_signed() {
    // The deadline escalates every 3 s and rejects at the fourth: the test decides well
    // before that, even on a loaded machine.
    let server = Server::start(None).await;
    let (url, mut got, stop) = receiver(StatusCode::NO_CONTENT).await;
    let notifier = Notifier::for_swarm(&server.swarm, config(url, SECRET))
        .await
        .unwrap();
    let id = server
        .submit_ok(&json!({
            "goal": "ship it",
            "tasks": [{ "id": "gate", "kind": "approval", "input": {"ship": true},
                        "timeout": "3s", "on_timeout": "escalate" }]
        }))
        .await;
    let notice = tokio::time::timeout(PATIENCE, got.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(notice.signed, "{notice:?}");
    assert_eq!(notice.body["type"], "task_escalated", "{notice:?}");
    assert_eq!(notice.body["objective"], id.as_str());
    assert_eq!(notice.body["escalation"], 1);
    assert_eq!(
        notice.delivery,
        format!("escalation-{}", notice.body["seq"]),
        "one delivery id per notice"
    );
    stats_until(&notifier, |s| s.delivered >= 1).await;

    // The task shows it, and the chain of work says who decided what.
    let view = server.view(&id).await;
    let gate = task_named(&view, "gate");
    assert_eq!(gate["status"], "review");
    assert!(gate["escalations"].as_u64().unwrap() >= 1, "{gate}");
    assert!(gate["review_until_ms"].is_u64(), "{gate}");
    let task = gate["id"].as_str().unwrap().to_owned();
    // The review page tells the reviewer when the deadline decides.
    let page = server.get_text("/ui/review").await;
    assert!(page.contains("Its deadline decides at"), "{page}");
    assert!(page.contains("escalated ×"), "{page}");
    let approved = server.approve(&task, None).await;
    assert_eq!(
        approved.status(),
        reqwest::StatusCode::NO_CONTENT,
        "{approved:?}"
    );
    // The chain of work: the deadline escalated, a person approved.
    let chain = server.chain(&id).await;
    let kinds: Vec<&str> = chain
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["type"].as_str())
        .collect();
    let escalated = kinds.iter().position(|k| *k == "task_escalated");
    let approved = kinds.iter().position(|k| *k == "task_approved");
    assert!(escalated < approved && escalated.is_some(), "{chain}");
    let approval = &chain[approved.unwrap()];
    assert!(
        approval.get("decided_by").is_none(),
        "a person decided: {approval}"
    );

    notifier.stop().await;
    let _ = stop.send(());
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_retries_and_then_trips_the_breaker() {
    let (url, mut got, stop) = receiver(StatusCode::SERVICE_UNAVAILABLE).await;
    let (feed, follower) = broadcast::channel(16);
    let notifier = Notifier::spawn(follower, config(url, SECRET));
    // Other events get no notice.
    let _ = feed.send(Arc::new(EventRecord {
        seq: 1,
        at_ms: 1,
        event: Event::ObjectiveCancelled {
            objective: ObjectiveId::new(),
        },
    }));
    let first = escalated(2);
    let _ = feed.send(first.clone());
    let _ = feed.send(escalated(3));
    let stats = stats_until(&notifier, |s| s.failed + s.refused_by_breaker == 2).await;
    assert_eq!(
        stats,
        NotifyStats {
            delivered: 0,
            tries: 3,
            failed: 1,
            refused_by_breaker: 1,
            dropped: 0,
        },
        "three tries of the first notice opened the breaker, which refused the second"
    );
    notifier.stop().await;
    let _ = stop.send(());
    // Each try is counted once its answer came, so every request is in already.
    let mut requests = Vec::new();
    while let Ok(request) = got.try_recv() {
        requests.push(request);
    }
    assert_eq!(requests.len(), 3, "{requests:#?}");
    let record = serde_json::to_value(&*first).unwrap();
    for request in &requests {
        assert!(request.signed, "{request:?}");
        assert_eq!(request.delivery, "escalation-2");
        assert_eq!(request.body, record);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_the_receiver_refuses_is_not_tried_again() {
    let (url, mut got, stop) = receiver(StatusCode::NO_CONTENT).await;
    let (feed, follower) = broadcast::channel(16);
    let notifier = Notifier::spawn(follower, config(url, b"not the receiver's secret"));
    let _ = feed.send(escalated(1));
    let stats = stats_until(&notifier, |s| s.failed == 1).await;
    assert_eq!((stats.tries, stats.delivered), (1, 0));
    notifier.stop().await;
    let _ = stop.send(());
    let request = got.try_recv().unwrap();
    assert!(!request.signed);
    assert!(got.try_recv().is_err(), "tried again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_recorded_while_the_swarm_opened_is_announced() {
    let dir = tempfile::tempdir().unwrap();
    let open = || Swarm::open(SwarmConfig::default(), StoreConfig::new(dir.path()));
    let swarm = open().await.unwrap();
    let objective: Objective = serde_json::from_value(json!({
        "goal": "ship it",
        "tasks": [{ "id": "gate", "kind": "approval", "timeout": "300d",
                    "on_timeout": "escalate" }]
    }))
    .unwrap();
    let id = swarm.submit(objective).await.unwrap();
    let mut feed = swarm.subscribe().unwrap();
    while swarm
        .objective(id)
        .await
        .unwrap()
        .task("gate")
        .unwrap()
        .status
        != TaskStatus::Review
    {
        tokio::time::timeout(PATIENCE, feed.recv())
            .await
            .unwrap()
            .unwrap();
    }
    let task = swarm.objective(id).await.unwrap().task("gate").unwrap().id;
    swarm.shutdown().await.unwrap();
    // While the coordinator was down, the deadline of an escalation passed.
    let store = SqliteStore::open(SqliteOptions::new(dir.path()))
        .await
        .unwrap();
    let last = store.info().await.unwrap().last_seq;
    let past = swarm_agents::clock::system_now_ms() - 60_000;
    store
        .append(&[EventRecord {
            seq: last + 1,
            at_ms: past,
            event: Event::TaskEscalated {
                objective: id,
                task,
                attempt: 1,
                escalation: 1,
                until_ms: past,
            },
        }])
        .await
        .unwrap();
    drop(store);

    let swarm = open().await.unwrap();
    let (url, mut got, stop) = receiver(StatusCode::NO_CONTENT).await;
    let notifier = Notifier::for_swarm(&swarm, config(url, SECRET))
        .await
        .unwrap();
    let notice = tokio::time::timeout(PATIENCE, got.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(notice.signed, "{notice:?}");
    assert_eq!(notice.body["escalation"], 2, "{notice:?}");
    assert_eq!(notice.body["objective"], id.to_string());
    notifier.stop().await;
    let _ = stop.send(());
    swarm.shutdown().await.unwrap();
}
