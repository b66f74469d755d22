//! Schedules over HTTP: created, listed, paused, resumed and deleted, and kept across a
//! restart.

use reqwest::StatusCode;
use serde_json::{Value, json};
use swarm_server::ApiConfig;

use crate::common::api::*;

/// `/v1/schedules`: a schedule is created (201, with its next fire times in its time zone),
/// listed, paused, resumed and deleted, each change an event in the log; a taken name is 409,
/// a bad cron expression or time zone a 422 naming the field, an unknown name 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_created_listed_paused_resumed_and_deleted() {
    let server = Server::start(None).await;
    let spec = json!({
        "name": "nightly",
        "cron": "0 30 2 * * *",
        "time_zone": "Europe/Berlin",
        "template": two_step(),
        "catch_up": { "policy": "run_latest", "window": "1h" }
    });
    let response = server.post("/v1/schedules", &spec).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["location"], "/v1/schedules/nightly");
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["name"], "nightly");
    assert_eq!(created["overlap"], "skip");
    assert_eq!(created["recent_fires"], json!([]));
    let next: Vec<u64> = serde_json::from_value(created["next_fires_ms"].clone()).unwrap();
    assert_eq!(next.len(), 5);
    assert!(next.windows(2).all(|w| w[0] < w[1]), "{next:?}");
    // 02:30 in Berlin is 00:30 or 01:30 UTC.
    for slot in &next {
        let of_day = slot % 86_400_000;
        assert!(of_day == 1_800_000 || of_day == 5_400_000, "{slot}");
    }

    let again = server.post("/v1/schedules", &spec).await;
    problem_at(again, StatusCode::CONFLICT, "name").await;
    for (field, bad) in [
        ("cron", json!({ "cron": "61 * * * *" })),
        ("cron", json!({ "cron": "* * *" })),
        ("time_zone", json!({ "time_zone": "Mars/Olympus_Mons" })),
        ("name", json!({ "name": "a:b" })),
        (
            "template.tasks[0].depends_on",
            json!({ "template": { "goal": "g", "tasks": [
                { "id": "a", "capability": "work", "depends_on": ["nowhere"] }
            ] } }),
        ),
    ] {
        let mut body = spec.clone();
        body["name"] = json!("other");
        for (k, v) in bad.as_object().unwrap() {
            body[k] = v.clone();
        }
        let response = server.post("/v1/schedules", &body).await;
        problem_at(response, StatusCode::UNPROCESSABLE_ENTITY, field).await;
    }
    // A cron problem says which field of the expression is wrong, what was given and what
    // is allowed.
    let mut late = spec.clone();
    late["name"] = json!("late");
    late["cron"] = json!("0 25 * * *");
    let response = server.post("/v1/schedules", &late).await;
    let refused = problem_at(response, StatusCode::UNPROCESSABLE_ENTITY, "cron").await;
    let detail = refused["detail"].as_str().unwrap();
    assert!(
        detail.contains("hour \"25\" is out of range: 0-23"),
        "{refused}"
    );

    let listed = server.get_json("/v1/schedules").await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["name"], "nightly");

    let paused: Value = server
        .post_empty("/v1/schedules/nightly/pause")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(paused["paused"], true);
    assert_eq!(paused["next_fires_ms"], json!([]));
    let resumed: Value = server
        .post_empty("/v1/schedules/nightly/resume")
        .await
        .json()
        .await
        .unwrap();
    assert!(resumed.get("paused").is_none(), "{resumed}");
    assert_eq!(resumed["next_fires_ms"].as_array().unwrap().len(), 5);

    let deleted = server.delete("/v1/schedules/nightly").await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = server.delete("/v1/schedules/nightly").await;
    problem_at(gone, StatusCode::NOT_FOUND, "name").await;
    let gone = server.post_empty("/v1/schedules/nightly/pause").await;
    problem(gone, StatusCode::NOT_FOUND).await;
    assert_eq!(server.get_json("/v1/schedules").await, json!([]));

    // Each change is in the log, in order.
    let mut stream = server.stream("/v1/events", Some(0)).await;
    let kinds: Vec<String> = until(&mut stream, "schedule_deleted")
        .await
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| k.starts_with("schedule_"))
        .collect();
    assert_eq!(
        kinds,
        [
            "schedule_created",
            "schedule_paused",
            "schedule_resumed",
            "schedule_deleted"
        ]
    );
    drop(stream);
    server.finish().await;
}

/// Schedules survive a restart, paused or not, until deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_survive_a_restart_until_deleted() {
    let server = Server::start(None).await;
    for name in ["every-5s", "nightly"] {
        let response = server
            .post(
                "/v1/schedules",
                &json!({ "name": name, "cron": "*/5 * * * * *", "template": two_step() }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let paused = server.post_empty("/v1/schedules/nightly/pause").await;
    assert_eq!(paused.status(), StatusCode::OK);
    // A slot fires once: firing it again returns the same objective.
    let slot = 1_800_000_000_000;
    let first = server.swarm.fire_schedule("every-5s", slot).await.unwrap();
    let again = server.swarm.fire_schedule("every-5s", slot).await.unwrap();
    assert_eq!(first, again);
    let later = server
        .swarm
        .fire_schedule("every-5s", slot + 5_000)
        .await
        .unwrap();
    assert_ne!(later, first);
    let before = server.get_json("/v1/schedules").await;
    assert_eq!(
        before[0]["recent_fires"],
        json!([
            { "slot_ms": slot + 5_000, "objective": later.to_string() },
            { "slot_ms": slot, "objective": first.to_string() },
        ])
    );
    let dir = server.finish().await;

    let server = Server::start_in(dir, ApiConfig::default()).await;
    let after = server.get_json("/v1/schedules").await;
    assert_eq!(after.as_array().unwrap().len(), 2, "{after}");
    for (before, after) in before
        .as_array()
        .unwrap()
        .iter()
        .zip(after.as_array().unwrap())
    {
        for field in [
            "name",
            "cron",
            "time_zone",
            "template",
            "overlap",
            "catch_up",
            "paused",
        ] {
            assert_eq!(before.get(field), after.get(field), "{field}");
        }
        assert_eq!(before["created_at_ms"], after["created_at_ms"]);
    }
    assert_eq!(after[1]["paused"], true);
    // The latest fire is kept across the restart, and the slot still fires only once.
    assert_eq!(
        after[0]["recent_fires"],
        json!([{ "slot_ms": slot + 5_000, "objective": later.to_string() }])
    );
    assert_eq!(
        server.swarm.fire_schedule("every-5s", slot).await.unwrap(),
        first
    );
    let deleted = server.delete("/v1/schedules/every-5s").await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let dir = server.finish().await;

    let server = Server::start_in(dir, ApiConfig::default()).await;
    let after = server.get_json("/v1/schedules").await;
    let names: Vec<&str> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nightly"]);
    server.finish().await;
}
