//! Provider accounts over HTTP: `GET /v1/accounts` lists the accounts of `swarm.toml` with
//! their live quota state, the agents on them and what they spent, and agents registered
//! through the API may name one.

use reqwest::StatusCode;
use serde_json::json;
use swarm_agents::sim::{SimConfig, SimServer};
use swarm_coordinator::config::Config;
use swarm_coordinator::model_agents::ModelAgents;
use swarm_server::ApiConfig;

use crate::common::api::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_show_their_quota_and_the_agents_that_share_it() {
    let sim = SimServer::start(SimConfig::default()).await.unwrap();
    let file = Config::parse(&format!(
        "[[accounts]]\nname = \"key\"\nprovider = \"openai\"\nbase_url = \"{}\"\n\
         rpm = 100\ntpm = 100000\nconcurrency = 3\n\
         [prices.sim]\ninput = 1.0\noutput = 2.0\n",
        sim.base_url()
    ))
    .unwrap();
    let (models, _) = ModelAgents::build(&file).unwrap();
    let server = Server::start_with(ApiConfig {
        models,
        ..ApiConfig::default()
    })
    .await;
    for name in ["first", "second"] {
        let agent = json!({
            "name": name, "account": "key", "model": "sim", "capabilities": ["write"],
            "max_tokens": 50
        });
        let response = server.post("/v1/agents", &agent).await;
        assert_eq!(response.status(), StatusCode::CREATED, "{name}");
    }
    let unknown = json!({
        "name": "third", "account": "nope", "model": "sim", "capabilities": ["write"]
    });
    let refused = problem(
        server.post("/v1/agents", &unknown).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("no account is named `nope`"),
        "{refused:#}"
    );

    let id = server
        .submit_ok(&json!({ "goal": "write", "tasks": [
            { "id": "a", "capability": "write", "input": "one" },
            { "id": "b", "capability": "write", "input": "two" }
        ] }))
        .await;
    let view = server.wait(&id).await;
    assert_eq!(view.status, swarm_protocol::ObjectiveStatus::Succeeded);

    let accounts = server.get_json("/v1/accounts").await;
    let accounts = accounts.as_array().unwrap();
    assert_eq!(accounts.len(), 1);
    let account = &accounts[0];
    assert_eq!(account["name"], "key");
    assert_eq!(account["rpm"], 100);
    assert_eq!(account["concurrency"], 3);
    assert_eq!(account["in_flight"], 0);
    assert_eq!(account["agents"], json!(["first", "second"]));
    assert_eq!(account["breaker_state"], json!({ "state": "closed" }));
    // Both calls were the account's, whichever agents made them; the tokens used are what the
    // provider reported, far below the two estimates of over 50 tokens each.
    let limiter = &account["limiter"];
    assert_eq!(
        limiter["requests"],
        json!({ "per_minute": 100, "used": 2 }),
        "{account:#}"
    );
    assert_eq!(limiter["granted"], 2, "{account:#}");
    let tokens: u64 = view
        .tasks
        .iter()
        .map(|t| t.usage.input_tokens + t.usage.output_tokens)
        .sum();
    assert!(tokens > 0);
    assert_eq!(limiter["tokens"]["used"], tokens, "{account:#}");
    // The model is priced at 1 and 2 micro-dollars an input and an output token: each task's
    // cost, the objective's total (`GET /v1/objectives/{id}`) and the account's spending.
    let cost: u64 = view
        .tasks
        .iter()
        .map(|t| {
            let cost = t.usage.input_tokens + 2 * t.usage.output_tokens;
            assert_eq!(t.usage.cost_usd_micros, Some(cost), "{t:?}");
            cost
        })
        .sum();
    assert_eq!(view.usage.cost_usd_micros, Some(cost));
    let shown = server.get_json(&format!("/v1/objectives/{id}")).await;
    assert_eq!(shown["usage"]["cost_usd_micros"], cost, "{shown:#}");
    assert_eq!(
        shown["tasks"][0]["usage"]["cost_usd_micros"],
        view.tasks[0].usage.cost_usd_micros.unwrap(),
        "{shown:#}"
    );
    assert_eq!(
        account["spent"],
        json!({ "cost_usd_micros": cost, "unpriced_tokens": 0 }),
        "{account:#}"
    );
    // Each agent shows the account it shares its breaker and limiter with.
    let first = server.agent_named("first").await;
    assert_eq!(first["account"], "key");
    assert_eq!(first["limiter"]["granted"], 2, "{first:#}");
    server.finish().await;
    sim.shutdown().await.unwrap();
}
