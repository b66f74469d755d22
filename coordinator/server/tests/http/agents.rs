//! Agents over HTTP: the probes and the agent list (breaker and limiter shown), model agents
//! registered and removed while serving (drained, or requeued when the grace elapses), and
//! declared agents surviving a restart.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use swarm_agents::sim::{SimConfig, SimServer};
use swarm_agents::{AgentFactory, EchoAgent};
use swarm_protocol::{Event, Health};
use swarm_server::ApiConfig;

use crate::common::api::*;
use crate::common::reg;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_agents() {
    let server = Server::start(None).await;
    let health = server.get("/healthz").await;
    assert_eq!(health.status(), StatusCode::OK);
    let ready = server.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK);
    assert!(ready.headers().contains_key("x-request-id"));

    let agents = server.get_json("/v1/agents").await;
    let names: Vec<&str> = agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["work-0", "echo-0", "judge-0", "gate-0", "hold-0"]);
    assert_eq!(agents[0]["health"], "up");
    assert_eq!(agents[0]["in_flight"], 0);
    assert_eq!(agents[0]["capabilities"], json!(["work"]));
    assert_eq!(agents[0]["restarts"], 0);
    // A plug-in without a breaker or a limiter says nothing about them.
    assert!(agents[0].get("breaker").is_none() && agents[0].get("limiter").is_none());
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_show_an_open_breaker_and_their_limiter() {
    let server = Server::start(None).await;
    let sim = SimServer::start(SimConfig::default()).await.unwrap();
    let mut feed = server.swarm.subscribe().unwrap();
    // Five 500s in a row; the breaker opens at the third and stays open for an hour.
    let model = json!({
        "name": "failing",
        "provider": "openai",
        "base_url": sim.base_url(),
        "model": "sim:fail=500x5",
        "capabilities": ["write"],
        "concurrency": 1,
        "rpm": 100,
        "tpm": 100000,
        "max_tokens": 50,
        "breaker": { "consecutive_failures": 3, "cool_down": "1h" }
    });
    let response = server.post("/v1/agents", &model).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let id: swarm_protocol::AgentId = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let closed = server.agent_named("failing").await;
    assert_eq!(closed["breaker"], json!({ "state": "closed" }));
    assert_eq!(
        closed["limiter"]["requests"],
        json!({ "per_minute": 100, "used": 0 })
    );

    server
        .submit_ok(&json!({ "goal": "write", "tasks": [{
            "id": "w", "capability": "write", "input": "a haiku",
            "retry": { "max_attempts": 10, "initial_backoff": "1ms", "max_backoff": "5ms" }
        }] }))
        .await;
    next_event(&mut feed, "the breaker opening", |e| {
        matches!(e, Event::AgentHealthChanged { agent, health: Health::Down, .. } if *agent == id)
    })
    .await;

    let open = server.agent_named("failing").await;
    assert_eq!(open["health"], "down", "{open:#}");
    assert_eq!(open["breaker"]["state"], "open", "{open:#}");
    let probe_in_ms = open["breaker"]["probe_in_ms"].as_u64().unwrap();
    assert!(
        probe_in_ms > 3_500_000 && probe_in_ms <= 3_600_000,
        "{open:#}"
    );
    // Three calls reached the model, within the last minute; none waited for quota.
    let limiter = &open["limiter"];
    assert_eq!(
        limiter["requests"],
        json!({ "per_minute": 100, "used": 3 }),
        "{open:#}"
    );
    assert_eq!(limiter["tokens"]["per_minute"], 100000, "{open:#}");
    assert!(
        limiter["tokens"]["used"].as_u64().unwrap() >= 3 * 50,
        "{open:#}"
    );
    assert_eq!(limiter["granted"], 3, "{open:#}");
    assert_eq!(limiter["waits"], 0, "{open:#}");
    assert_eq!(limiter["waiting"], 0, "{open:#}");
    assert_eq!(open["restarts"], 0, "{open:#}");
    assert_eq!(sim.stats().total(), 3);

    server.finish().await;
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_agents_are_registered_and_removed_while_serving() {
    let server = Server::start(None).await;
    let sim = SimServer::start(SimConfig::default()).await.unwrap();
    let model = json!({
        "name": "model-1",
        "provider": "openai",
        "base_url": sim.base_url(),
        "model": "m",
        "capabilities": ["write"],
        "concurrency": 2,
        "breaker": { "consecutive_failures": 3, "cool_down": "10s" }
    });
    let response = server.post("/v1/agents", &model).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let descriptor: Value = response.json().await.unwrap();
    let id = descriptor["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("/v1/agents/{id}"));
    assert_eq!(descriptor["name"], "model-1");
    assert_eq!(descriptor["capabilities"], json!(["write"]));
    assert_eq!(descriptor["max_concurrency"], 2);
    let agents = server.get_json("/v1/agents").await;
    assert!(
        agents
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == id.as_str())
    );

    // It takes work at once.
    let objective = server
        .submit_ok(&json!({ "goal": "write", "tasks": [{ "id": "w", "capability": "write", "input": "a haiku" }] }))
        .await;
    let view = server.wait(&objective).await;
    assert_eq!(
        serde_json::to_value(view.status).unwrap(),
        "succeeded",
        "{view:#?}"
    );

    // A second agent of the same name, a missing key variable, an unknown field.
    let again = server.post("/v1/agents", &model).await;
    problem(again, StatusCode::UNPROCESSABLE_ENTITY).await;
    let mut keyed = model.clone();
    keyed["name"] = json!("model-2");
    keyed["api_key_env"] = json!("SWARM_HTTP_TEST_KEY_NEVER_SET");
    let response = server.post("/v1/agents", &keyed).await;
    let body = problem_at(response, StatusCode::UNPROCESSABLE_ENTITY, "api_key_env").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("SWARM_HTTP_TEST_KEY_NEVER_SET")
    );
    let mut unknown = model.clone();
    unknown["name"] = json!("model-3");
    unknown["api_key"] = json!("sk-inline");
    let response = server.post("/v1/agents", &unknown).await;
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(!body.to_string().contains("sk-inline"));
    assert_eq!(
        server
            .get_json("/v1/agents")
            .await
            .as_array()
            .unwrap()
            .len(),
        6
    );

    // Removed: it drains (nothing runs on it) and leaves; then a second removal is a 404.
    let mut feed = server.swarm.subscribe().unwrap();
    let delete = |id: String| {
        server
            .request(Method::DELETE, &format!("/v1/agents/{id}"))
            .send()
    };
    let response = delete(id.clone()).await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let agent: swarm_protocol::AgentId = id.parse().unwrap();
    next_event(
        &mut feed,
        "the removal",
        |e| matches!(e, Event::AgentDeregistered { agent: a } if *a == agent),
    )
    .await;
    let agents = server.get_json("/v1/agents").await;
    assert!(
        !agents
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == id.as_str())
    );
    problem_at(delete(id).await.unwrap(), StatusCode::NOT_FOUND, "id").await;
    let body = problem(
        delete("nope".into()).await.unwrap(),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(body["field"], "id");

    server.finish().await;
    sim.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_drains_a_running_attempt_then_removes_the_agent() {
    let server = Server::start(None).await;
    let mut feed = server.swarm.subscribe().unwrap();
    let gate = server.agent_named("gate-0").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let agent: swarm_protocol::AgentId = gate.parse().unwrap();
    let id = server
        .submit_ok(&json!({ "goal": "slow", "tasks": [{ "id": "g", "capability": "gate" }] }))
        .await;
    let mut stream = server.events(&id, None).await;
    until(&mut stream, "task_started").await;

    let delete = |query: &str| {
        server
            .request(Method::DELETE, &format!("/v1/agents/{gate}{query}"))
            .send()
    };
    let response = delete("?grace=1m").await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "id": gate.as_str(), "health": "draining", "grace": "1m" })
    );
    // Recorded (and durable) before the answer.
    next_event(&mut feed, "draining", |e| {
        matches!(e, Event::AgentHealthChanged { agent: a, health: Health::Draining, .. } if *a == agent)
    })
    .await;
    // Still there, draining, with its attempt; asking again changes nothing.
    let draining = server.agent_named("gate-0").await;
    assert_eq!(draining["health"], "draining", "{draining:#}");
    assert_eq!(draining["in_flight"], 1, "{draining:#}");
    let again = delete("").await.unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    // Nothing new is given to it: another task of its capability waits in the queue.
    let waiting = server
        .submit_ok(&json!({ "goal": "later", "tasks": [{ "id": "w", "capability": "gate" }] }))
        .await;
    let text = server.get("/metrics").await.text().await.unwrap();
    let samples = prometheus_samples(&text);
    assert_eq!(
        samples["swarm_tasks_queued_by_capability{capability=\"gate\"}"], 1.0,
        "{text}"
    );
    assert_eq!(
        samples[&format!(
            "swarm_agent_health{{agent=\"{gate}\",name=\"gate-0\",health=\"draining\"}}"
        )],
        1.0,
        "{text}"
    );

    // The running attempt finishes, as its first and only attempt; then the agent leaves.
    server.gate.add_permits(1);
    let view = server.wait(&id).await;
    assert_eq!(serde_json::to_value(view.status).unwrap(), "succeeded");
    assert_eq!(view.tasks[0].attempts, 1, "{view:#?}");
    assert_eq!(view.tasks[0].output, Some(json!("through")));
    next_event(
        &mut feed,
        "the removal",
        |e| matches!(e, Event::AgentDeregistered { agent: a } if *a == agent),
    )
    .await;
    let chain = server.chain(&id).await;
    assert!(
        !chain.to_string().contains("attempt_lost"),
        "the drained attempt was lost: {chain:#}"
    );
    let agents = server.get_json("/v1/agents").await;
    assert!(!agents.to_string().contains("gate-0"), "{agents:#}");
    let gone = delete("").await.unwrap();
    problem_at(gone, StatusCode::NOT_FOUND, "id").await;
    let later = server.view(&waiting).await;
    assert_eq!(later["tasks"][0]["status"], "ready", "{later:#}");
    assert_eq!(later["tasks"][0]["attempts"], 0, "{later:#}");
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_requeues_what_still_runs_when_the_grace_elapses() {
    let server = Server::start(None).await;
    let mut feed = server.swarm.subscribe().unwrap();
    let hold = server.agent_named("hold-0").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let agent: swarm_protocol::AgentId = hold.parse().unwrap();
    let delete = |query: &str| {
        server
            .request(Method::DELETE, &format!("/v1/agents/{hold}{query}"))
            .send()
    };
    // Bad graces are problems naming the parameter, and change nothing.
    for (query, field) in [
        ("?grace=soon", "grace"),
        ("?grace=2h", "grace"),
        ("?grace=", "grace"),
        ("?wait=1s", "wait"),
    ] {
        let response = delete(query).await.unwrap();
        problem_at(response, StatusCode::BAD_REQUEST, field).await;
    }
    assert_eq!(server.agent_named("hold-0").await["health"], "up");
    let unknown = server.delete("/v1/agents/A999?grace=1s").await;
    problem_at(unknown, StatusCode::NOT_FOUND, "id").await;

    let held = server.submit_ok(&hold_forever()).await;
    let mut stream = server.events(&held, None).await;
    until(&mut stream, "task_started").await;
    let response = delete("?grace=50ms").await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    // The attempt never ends: when the grace elapses the agent leaves and the attempt goes
    // back to the queue.
    let lost = until(&mut stream, "attempt_lost").await;
    let reason = lost.last().unwrap().data["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("grace of 50ms elapsed"), "{reason}");
    next_event(
        &mut feed,
        "the removal",
        |e| matches!(e, Event::AgentDeregistered { agent: a } if *a == agent),
    )
    .await;
    let text = server.get("/metrics").await.text().await.unwrap();
    let samples = prometheus_samples(&text);
    assert_eq!(
        samples["swarm_tasks_queued_by_capability{capability=\"hold\"}"], 1.0,
        "{text}"
    );
    assert_eq!(samples["swarm_tasks_running"], 0.0, "{text}");
    server.finish().await;
}

/// Registers a model agent through the API; returns its id.
async fn post_agent(server: &Server, body: &Value) -> String {
    let response = server.post("/v1/agents", body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn names(agents: &Value) -> Vec<String> {
    agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_registered_over_http_survive_a_restart_until_removed() {
    let sim = SimServer::start(SimConfig::default()).await.unwrap();
    let model = |name: &str| {
        json!({
            "name": name,
            "provider": "openai",
            "base_url": sim.base_url(),
            "model": "m",
            "capabilities": ["write"],
            "concurrency": 3,
            "rpm": 600,
            "breaker": { "consecutive_failures": 4, "cool_down": "7s" }
        })
    };
    let server = Server::start(None).await;
    post_agent(&server, &model("api-writer")).await;
    post_agent(&server, &model("clash")).await;
    // Not a declared agent: registered by the process itself, so not brought back.
    assert!(server.swarm.declared_agents().await.unwrap().len() == 2);
    let dir = server.finish().await;

    // Restarted on the same data directory. `clash` is now also the name of an agent the
    // process registers itself (as one of `swarm.toml` would be): that one wins.
    let server = Server::start_in(dir, ApiConfig::default()).await;
    let configured = server
        .swarm
        .register_agent(reg("clash", &["other"], 1), AgentFactory::shared(EchoAgent))
        .await
        .unwrap();
    let restored = swarm_server::register_declared_agents(&server.swarm)
        .await
        .unwrap();
    let restored: Vec<&str> = restored.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(restored, ["api-writer"]);
    let writer = server.agent_named("api-writer").await;
    assert_eq!(writer["capabilities"], json!(["write"]), "{writer:#}");
    assert_eq!(writer["max_concurrency"], 3, "{writer:#}");
    assert_eq!(
        writer["limiter"]["requests"]["per_minute"], 600,
        "{writer:#}"
    );
    let clash = server.agent_named("clash").await;
    assert_eq!(clash["id"], configured.id.to_string(), "{clash:#}");
    // It works: a task of its capability runs on it.
    let objective = server
        .submit_ok(&json!({ "goal": "write", "tasks": [{ "id": "w", "capability": "write", "input": "a haiku" }] }))
        .await;
    let view = server.wait(&objective).await;
    assert_eq!(serde_json::to_value(view.status).unwrap(), "succeeded");
    assert_eq!(
        view.tasks[0].agent.map(|a| a.to_string()),
        writer["id"].as_str().map(str::to_owned)
    );

    // Removed: forgotten at once, so the next start does not bring it back.
    let response = server
        .request(
            Method::DELETE,
            &format!("/v1/agents/{}", writer["id"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let declared: Vec<String> = server
        .swarm
        .declared_agents()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(declared, ["clash"]);
    let dir = server.finish().await;

    let server = Server::start_in(dir, ApiConfig::default()).await;
    let restored = swarm_server::register_declared_agents(&server.swarm)
        .await
        .unwrap();
    let restored: Vec<&str> = restored.iter().map(|d| d.name.as_str()).collect();
    // The file's `clash` is gone this time, so the declared one comes back.
    assert_eq!(restored, ["clash"]);
    let agents = names(&server.get_json("/v1/agents").await);
    assert!(!agents.contains(&"api-writer".to_owned()), "{agents:?}");
    assert_eq!(
        server.agent_named("clash").await["capabilities"],
        json!(["write"])
    );
    server.finish().await;
    sim.shutdown().await.unwrap();
}
