#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::json;

fn key(s: &str) -> TaskKey {
    TaskKey::new(s).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn task_spec_json_is_pleasant_and_round_trips() {
    let spec: TaskSpec = serde_json::from_value(json!({
        "id": "sum", "capability": "summarize", "depends_on": ["fetch"],
        "hard_timeout": "2m", "idle_timeout": "15s", "retry": { "max_attempts": 5 }
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.hard_timeout, Some(Duration::from_secs(120)));
    assert_eq!(spec.idle_timeout, Some(Duration::from_secs(15)));
    assert_eq!(spec.retry.max_attempts, 5);
    assert_eq!(spec.retry.initial_backoff, Duration::from_millis(200));
    let text = serde_json::to_string(&spec).unwrap_or_default();
    let back: TaskSpec = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, spec);
}

#[test]
fn a_compensation_reads_from_json_and_may_refer_only_to_its_task() {
    let spec: TaskSpec = serde_json::from_value(json!({
        "id": "book", "capability": "booking", "input": {"room": 12},
        "compensation": {
            "capability": "booking",
            "input": {"cancel": {"$from": "book", "pointer": "/reservation"}},
            "retry": {"max_attempts": 5}, "hard_timeout": "30s"
        }
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let compensation = spec.compensation.clone().unwrap();
    assert_eq!(compensation.retry.max_attempts, 5);
    assert_eq!(compensation.hard_timeout, Some(Duration::from_secs(30)));
    assert_eq!(check_compensation_references(&spec), Ok(()));
    let as_task = compensation.task_spec(&spec.id);
    assert_eq!(as_task.depends_on, vec![key("book")]);
    let mut up = BTreeMap::new();
    up.insert(key("book"), json!({"reservation": "R-7"}));
    assert_eq!(
        resolve_input(&as_task.input, &up),
        Ok(json!({"cancel": "R-7"}))
    );
    let mut other = spec.clone();
    other.compensation = Some(Compensation::new(
        Capability::new("booking").unwrap(),
        json!({"$from": "fetch"}),
    ));
    assert_eq!(
        check_compensation_references(&other),
        Err(InputError::NotADependency("fetch".into()))
    );
    let err = serde_json::from_value::<TaskSpec>(json!({
        "id": "a", "capability": "x", "compensation": {"capability": "x", "inputs": 1}
    }))
    .map(|_| ())
    .unwrap_err();
    assert!(err.to_string().contains("inputs"), "{err}");
}

#[test]
fn wait_and_approval_tasks_take_no_capability_and_name_what_they_lack() {
    let wait: TaskSpec = serde_json::from_value(json!({
        "id": "ci", "kind": "wait", "event": "build-{objective}", "timeout": "1h"
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(wait.kind, TaskKind::Wait);
    assert_eq!(wait.capability.as_str(), "wait");
    assert_eq!(wait.timeout, Some(Duration::from_secs(3600)));
    let text = serde_json::to_value(&wait).unwrap();
    assert_eq!(serde_json::from_value::<TaskSpec>(text).ok(), Some(wait));
    let approval: TaskSpec = serde_json::from_value(json!({
        "id": "ok", "kind": "approval", "input": {"$from": "a"}, "depends_on": ["a"]
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(approval.capability.as_str(), "approval");
    let agent: TaskSpec = serde_json::from_value(json!({"id": "a", "capability": "x"})).unwrap();
    assert_eq!(agent.kind, TaskKind::Agent);
    assert!(!serde_json::to_string(&agent).unwrap().contains("kind"));

    let refused = |body: Value| match serde_json::from_value::<TaskSpec>(body) {
        Ok(spec) => panic!("accepted {spec:?}"),
        Err(e) => e.to_string(),
    };
    for (body, says) in [
        (json!({"id": "a"}), "missing field `capability`"),
        (
            json!({"id": "a", "kind": "wait", "timeout": "1m"}),
            "`event`",
        ),
        (
            json!({"id": "a", "kind": "wait", "event": "k"}),
            "`timeout`",
        ),
        (
            json!({"id": "a", "kind": "wait", "event": "k", "timeout": "0s"}),
            "`timeout` must be longer than zero",
        ),
        (
            json!({"id": "a", "kind": "wait", "event": "has space", "timeout": "1m"}),
            "`event` contains ' '",
        ),
        (
            json!({"id": "a", "kind": "approval", "capability": "review"}),
            "`capability`",
        ),
        (
            json!({"id": "a", "capability": "x", "event": "k"}),
            "`event` is only for tasks of kind `wait`",
        ),
        (
            json!({"id": "a", "kind": "approval", "hard_timeout": "1m"}),
            "`hard_timeout` is only for tasks of kind `agent`",
        ),
        (
            json!({"id": "a", "kind": "sleep"}),
            "unknown variant `sleep`",
        ),
        (json!({"id": "a", "capability": "x", "tmeout": 1}), "tmeout"),
    ] {
        let message = refused(body.clone());
        assert!(message.contains(says), "{body}: {message}");
    }
}

#[test]
fn review_deadlines_belong_to_their_kinds_and_fail_safe_by_default() {
    let approval: TaskSpec = serde_json::from_value(json!({
        "id": "ok", "kind": "approval", "timeout": "4h", "on_timeout": "escalate"
    }))
    .unwrap();
    assert_eq!(
        approval.review_deadline(),
        Some(ReviewDeadline {
            after: Duration::from_secs(4 * 3600),
            then: OnTimeout::Escalate
        })
    );
    let text = serde_json::to_value(&approval).unwrap();
    assert_eq!(text["on_timeout"], "escalate");
    assert_eq!(
        serde_json::from_value::<TaskSpec>(text).ok(),
        Some(approval)
    );
    let plain: TaskSpec =
        serde_json::from_value(json!({"id": "ok", "kind": "approval", "timeout": "1m"})).unwrap();
    assert_eq!(
        plain.review_deadline().map(|d| d.then),
        Some(OnTimeout::Reject),
        "a deadline rejects unless told otherwise"
    );
    let agent: TaskSpec = serde_json::from_value(json!({
        "id": "a", "capability": "x", "review_timeout": "1d", "on_review_timeout": "approve"
    }))
    .unwrap();
    assert_eq!(
        agent.review_deadline(),
        Some(ReviewDeadline {
            after: Duration::from_secs(86_400),
            then: OnTimeout::Approve
        })
    );
    let none: TaskSpec = serde_json::from_value(json!({"id": "ok", "kind": "approval"})).unwrap();
    assert_eq!(none.review_deadline(), None);
    let text = serde_json::to_string(&none).unwrap();
    assert!(!text.contains("timeout"), "{text}");

    for (body, says) in [
        (
            json!({"id": "a", "capability": "x", "timeout": "1m"}),
            "`timeout` is only for tasks of kind `wait` or `approval`",
        ),
        (
            json!({"id": "a", "kind": "wait", "event": "k", "timeout": "1m",
                   "on_timeout": "approve"}),
            "`on_timeout` is only for tasks of kind `approval`",
        ),
        (
            json!({"id": "a", "kind": "approval", "on_timeout": "approve"}),
            "`on_timeout` needs a `timeout`",
        ),
        (
            json!({"id": "a", "kind": "approval", "timeout": "0s"}),
            "`timeout` must be longer than zero",
        ),
        (
            json!({"id": "a", "kind": "approval", "review_timeout": "1m"}),
            "`review_timeout` is only for tasks of kind `agent` or `wait`",
        ),
        (
            json!({"id": "a", "capability": "x", "on_review_timeout": "reject"}),
            "`on_review_timeout` needs a `review_timeout`",
        ),
        (
            json!({"id": "a", "capability": "x", "review_timeout": "0s"}),
            "`review_timeout` must be longer than zero",
        ),
        (
            json!({"id": "a", "kind": "approval", "timeout": "1m", "on_timeout": "wait"}),
            "unknown variant `wait`",
        ),
    ] {
        let err = serde_json::from_value::<TaskSpec>(body.clone())
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{body}: {err}");
    }
}

#[test]
fn unknown_fields_are_named() {
    let err = serde_json::from_value::<TaskSpec>(json!({
        "id": "a", "capability": "x", "dependson": []
    }))
    .map(|_| ())
    .unwrap_err();
    assert!(err.to_string().contains("dependson"), "{err}");
}

#[test]
fn backoff_doubles_up_to_the_ceiling() {
    let p = RetryPolicy {
        max_attempts: 10,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(500),
    };
    assert_eq!(p.backoff_ceiling(2), Duration::from_millis(100));
    assert_eq!(p.backoff_ceiling(3), Duration::from_millis(200));
    assert_eq!(p.backoff_ceiling(4), Duration::from_millis(400));
    assert_eq!(p.backoff_ceiling(5), Duration::from_millis(500));
    assert_eq!(p.backoff_ceiling(99), Duration::from_millis(500));
}

#[test]
fn references_resolve_to_upstream_outputs() {
    let mut up = BTreeMap::new();
    up.insert(key("fetch"), json!({"body": "hello", "n": 2}));
    let input =
        json!({"text": {"$from": "fetch", "pointer": "/body"}, "all": [{"$from": "fetch"}]});
    assert!(has_references(&input));
    let out = resolve_input(&input, &up).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        out,
        json!({"text": "hello", "all": [{"body": "hello", "n": 2}]})
    );
    assert_eq!(
        resolve_input(&json!({"$from": "nope"}), &up),
        Err(InputError::NotADependency("nope".into()))
    );
    assert!(matches!(
        resolve_input(&json!({"$from": "fetch", "pointer": "/zzz"}), &up),
        Err(InputError::PointerMisses { .. })
    ));
}

#[test]
fn references_are_checked_against_dependencies() {
    let cap = Capability::new("x").unwrap_or_else(|e| panic!("{e}"));
    let spec = TaskSpec::new(key("b"), cap)
        .with_input(json!({"a": [{"$from": "a"}]}))
        .after([key("a")]);
    assert_eq!(check_references(&spec), Ok(()));
    let bad = spec.clone().with_input(json!({"$from": "c"}));
    assert_eq!(
        check_references(&bad),
        Err(InputError::NotADependency("c".into()))
    );
    let malformed = spec.with_input(json!({"$from": 3}));
    assert_eq!(check_references(&malformed), Err(InputError::Malformed));
}
