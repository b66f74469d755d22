//! The limits of the API over real HTTP: a client's quota, failed authentication per address
//! (bearer tokens and the login form), the `Secure` session cookie, and admission control over
//! the backlog. A second client comes from another loopback address (127.0.0.2).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use swarm_coordinator::{Swarm, SwarmConfig};
use swarm_server::ApiConfig;
use swarm_server::limits::{Limits, Rate};

use crate::common::api::*;

fn rate(requests: u32, period: Duration, burst: u32) -> Rate {
    Rate::new(
        NonZeroU32::new(requests).unwrap(),
        period,
        NonZeroU32::new(burst).unwrap(),
    )
}

/// A client that connects from `ip` (any address of 127.0.0.0/8 is this host's) and neither
/// follows redirects nor keeps cookies.
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(ip))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The `Retry-After` of a 429, in seconds.
fn retry_after(response: &reqwest::Response) -> u64 {
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Three requests an hour, three at once: the fourth waits 20 minutes, another address does
/// not, and once (paused) time has moved on the first passes again.
#[tokio::test(start_paused = true)]
async fn a_client_over_its_quota_waits_and_another_does_not() {
    let swarm = Arc::new(Swarm::start(SwarmConfig::default()).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = ApiConfig {
        limits: Limits {
            client: Some(rate(3, Duration::from_secs(3600), 3)),
            ..Limits::default()
        },
        ..ApiConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(swarm_server::serve(
        swarm.clone(),
        listener,
        config,
        async move {
            let _ = stopped.await;
        },
    ));
    let (one, two) = (client_from([127, 0, 0, 1]), client_from([127, 0, 0, 2]));
    let get = |client: &reqwest::Client, path: &str| client.get(format!("{base}{path}")).send();

    for _ in 0..3 {
        assert_eq!(
            get(&one, "/v1/agents").await.unwrap().status(),
            StatusCode::OK
        );
    }
    let refused = get(&one, "/v1/agents").await.unwrap();
    assert_eq!(retry_after(&refused), 1200);
    let body = problem(refused, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body["type"], "urn:swarm:problem:quota");
    // The probes are not counted.
    assert_eq!(
        get(&one, "/healthz").await.unwrap().status(),
        StatusCode::OK
    );
    // Another address is another client.
    assert_eq!(
        get(&two, "/v1/agents").await.unwrap().status(),
        StatusCode::OK
    );

    tokio::time::advance(Duration::from_secs(1199)).await;
    let refused = get(&one, "/v1/agents").await.unwrap();
    assert_eq!(retry_after(&refused), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        get(&one, "/v1/agents").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        get(&one, "/v1/agents").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    stop.send(()).unwrap();
    served.await.unwrap().unwrap();
    let swarm = Arc::try_unwrap(swarm).ok().unwrap();
    assert!(swarm.failure().is_none());
    swarm.shutdown().await.unwrap();
}

fn two_failures_an_hour() -> ApiConfig {
    ApiConfig {
        token: Some(TOKEN.to_owned()),
        limits: Limits {
            auth_failures: rate(2, Duration::from_secs(3600), 2),
            ..Limits::default()
        },
        ..ApiConfig::default()
    }
}

/// Past the failed-authentication limit, an address is refused before its token is compared:
/// the right token too. Another address, and a valid token, are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bearer_tokens_are_limited_per_address() {
    let server = Server::start_with(two_failures_an_hour()).await;
    let (one, two) = (client_from([127, 0, 0, 1]), client_from([127, 0, 0, 2]));
    let call = |client: &reqwest::Client, token: &str| {
        client
            .get(server.url("/v1/agents"))
            .bearer_auth(token)
            .send()
    };
    // Valid tokens are not failures, however many.
    for _ in 0..5 {
        assert_eq!(call(&one, TOKEN).await.unwrap().status(), StatusCode::OK);
    }
    for _ in 0..2 {
        let wrong = call(&one, "guess").await.unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    }
    let limited = call(&one, "guess").await.unwrap();
    assert_eq!(retry_after(&limited), 1800);
    let body = problem(limited, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body["type"], "urn:swarm:problem:auth-failures");
    let right = call(&one, TOKEN).await.unwrap();
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
    // A request without a token is no guess: it is answered 401 as before.
    let bare = one.get(server.url("/v1/agents")).send().await.unwrap();
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);

    assert_eq!(call(&two, TOKEN).await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        call(&two, "guess").await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    // The two refusals of 127.0.0.1 are counted (read from the other address).
    let text = two
        .get(server.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let samples = prometheus_samples(&text);
    assert_eq!(
        samples["swarm_http_refused_total{limit=\"auth_failures\"}"], 2.0,
        "{text}"
    );
    server.finish().await;
}

/// The login form counts wrong tokens per address the same way, and answers 429 (with the
/// form) before comparing once the limit is reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_logins_are_limited_per_address() {
    let server = Server::start_with(two_failures_an_hour()).await;
    let (one, two) = (client_from([127, 0, 0, 1]), client_from([127, 0, 0, 2]));
    let login = |client: &reqwest::Client, token: &str| {
        client
            .post(server.url("/ui/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}&next=/ui/"))
            .send()
    };
    for _ in 0..2 {
        assert_eq!(
            login(&one, "guess").await.unwrap().status(),
            StatusCode::FORBIDDEN
        );
    }
    let limited = login(&one, "guess").await.unwrap();
    assert!(retry_after(&limited) > 0);
    assert!(
        limited
            .text()
            .await
            .unwrap()
            .contains("Too many wrong tokens")
    );
    let right = login(&one, TOKEN).await.unwrap();
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(right.headers().get("set-cookie").is_none());
    // Bearer guesses and login guesses share the address's budget.
    let bearer = one
        .get(server.url("/v1/agents"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), StatusCode::TOO_MANY_REQUESTS);

    let other = login(&two, TOKEN).await.unwrap();
    assert_eq!(other.status(), StatusCode::SEE_OTHER);
    assert!(other.headers().get("set-cookie").is_some());
    server.finish().await;
}

/// The session cookie is `Secure` when configured so, or when the login came through a proxy
/// that terminated TLS; not otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_is_secure_behind_tls() {
    let cookie = |response: &reqwest::Response| {
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let plain = Server::start(Some(TOKEN)).await;
    let client = raw_client();
    let login = |server: &Server, proto: Option<&str>| {
        let mut request = client
            .post(server.url("/ui/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={TOKEN}&next=/ui/"));
        if let Some(proto) = proto {
            request = request.header("x-forwarded-proto", proto);
        }
        request.send()
    };
    let http = cookie(&login(&plain, None).await.unwrap());
    assert!(
        http.starts_with("swarm_session=") && !http.contains("Secure"),
        "{http}"
    );
    let proxied = cookie(&login(&plain, Some("https")).await.unwrap());
    assert!(proxied.ends_with("; Secure"), "{proxied}");
    let proxied_http = cookie(&login(&plain, Some("http")).await.unwrap());
    assert!(!proxied_http.contains("Secure"), "{proxied_http}");
    plain.finish().await;

    let secure = Server::start_with(ApiConfig {
        token: Some(TOKEN.to_owned()),
        secure_cookies: true,
        ..ApiConfig::default()
    })
    .await;
    let configured = cookie(&login(&secure, None).await.unwrap());
    assert!(configured.ends_with("; Secure"), "{configured}");
    let logout = client
        .post(secure.url("/ui/logout"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let cleared = logout.headers()["set-cookie"].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0") && cleared.ends_with("; Secure"));
    secure.finish().await;
}

/// With a backlog bound of 2, a third running objective is refused before anything is created,
/// and so is a posted event; once one ends, submits pass again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submits_past_the_backlog_bound_are_refused() {
    let server = Server::start_with(ApiConfig {
        limits: Limits {
            backlog_max: Some(2),
            // Read the backlog on every request, so each answer sees the one before.
            backlog_refresh: Duration::ZERO,
            ..Limits::default()
        },
        ..ApiConfig::default()
    })
    .await;
    // Each objective's task runs (it is no longer queued) before the next request reads the
    // backlog, so the backlog is the two objectives, whatever the scheduler's pace.
    let first = server.submit_ok(&hold_forever()).await;
    until(&mut server.events(&first, None).await, "task_started").await;
    let second = server.submit_ok(&hold_forever()).await;
    until(&mut server.events(&second, None).await, "task_started").await;

    let refused = server.submit(&hold_forever(), Some("k-1")).await;
    assert!(retry_after(&refused) >= 1);
    let body = problem(refused, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(body["type"], "urn:swarm:problem:backlog");
    let event = server.post_event(&json!({ "key": "deployed" }), None).await;
    problem(event, StatusCode::TOO_MANY_REQUESTS).await;
    // Reads are not refused, and nothing was created.
    let listed = server.get_json("/v1/objectives").await;
    assert_eq!(
        listed["objectives"].as_array().unwrap().len(),
        2,
        "{listed}"
    );

    assert_eq!(server.cancel(&first).await.status(), StatusCode::OK);
    server.wait(&first).await;
    let accepted = server.submit(&hold_forever(), Some("k-1")).await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    server.finish().await;
}

/// Between two readings of the backlog, the requests let in count: a burst stops at the bound
/// though the scheduler's figure was read only once, before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_stops_at_the_bound_before_the_figure_is_read_again() {
    let server = Server::start_with(ApiConfig {
        limits: Limits {
            backlog_max: Some(3),
            backlog_refresh: Duration::from_secs(3600),
            ..Limits::default()
        },
        ..ApiConfig::default()
    })
    .await;
    for _ in 0..3 {
        server.submit_ok(&two_step()).await;
    }
    let refused = server.submit(&two_step(), None).await;
    assert_eq!(retry_after(&refused), 3600);
    assert_eq!(
        server.get_json("/v1/objectives").await["objectives"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    server.finish().await;
}

/// The document declares the 429s: every route but the probes may answer it, with
/// `Retry-After`, and the routes that create work name the backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_declares_the_429s() {
    let server = Server::start(None).await;
    let doc = server.get_json("/openapi.json").await;
    let answer = |path: &str, method: &str| doc["paths"][path][method]["responses"]["429"].clone();
    let submit = answer("/v1/objectives", "post");
    assert!(submit["headers"]["Retry-After"].is_object(), "{submit}");
    assert!(submit["description"].as_str().unwrap().contains("quota"));
    assert!(
        submit["description"]
            .as_str()
            .unwrap()
            .contains("auth-failures")
    );
    // A webhook delivery is signed, not authenticated by the token.
    let hook = answer("/v1/hooks/{name}", "post");
    assert!(
        !hook["description"]
            .as_str()
            .unwrap()
            .contains("auth-failures")
    );
    for (path, method) in [
        ("/v1/objectives", "post"),
        ("/v1/events", "post"),
        ("/v1/hooks/{name}", "post"),
    ] {
        let description = answer(path, method)["description"].clone();
        assert!(description.as_str().unwrap().contains("backlog"), "{path}");
    }
    let list = answer("/v1/objectives", "get");
    assert!(list["description"].as_str().unwrap().contains("quota"));
    assert!(!list["description"].as_str().unwrap().contains("backlog"));
    assert!(answer("/healthz", "get").is_null());
    server.finish().await;
}
