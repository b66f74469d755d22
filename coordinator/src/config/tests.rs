use swarm_agents::model::provider::{MaxTokensField, Provider};

use super::*;

#[test]
fn approvals_name_their_secret_and_are_checked() {
    let config = Config::parse(
        r#"
        [approvals]
        notify_url = "http://127.0.0.1:9/escalations"
        secret_env = "SWARM_NOTIFY_SECRET"
        attempts = 3
        initial_backoff = "10ms"
        breaker = { consecutive_failures = 2, cool_down = "1m" }
        "#,
    )
    .unwrap();
    let approvals = &config.approvals;
    assert_eq!(approvals.attempts, 3);
    assert_eq!(approvals.initial_backoff, Duration::from_millis(10));
    assert_eq!(approvals.max_backoff, Duration::from_secs(60));
    assert_eq!(approvals.breaker.consecutive_failures, 2);
    assert_eq!(Config::parse("").unwrap().approvals.notify_url, None);
    for (text, says) in [
        (
            "[approvals]\nnotify_url = \"http://x/\"",
            "needs a signing secret",
        ),
        (
            "[approvals]\nnotify_url = \"ftp://x/\"\nsecret_env = \"S\"",
            "approvals.notify_url",
        ),
        (
            "[approvals]\nnotify_url = \"http://x/\"\nsecret_env = \"S\"\nsecret_file = \"f\"",
            "not both",
        ),
        ("[approvals]\nattempts = 0", "approvals.attempts"),
        (
            "[approvals]\nmax_backoff = \"1000y\"",
            "approvals.max_backoff",
        ),
        (
            "[approvals]\nnotify = \"http://x/\"",
            "unknown field `notify`",
        ),
    ] {
        let err = Config::parse(text).unwrap_err();
        assert!(err.contains(says), "{text}: {err}");
    }
}

#[test]
fn hooks_are_read_with_their_secret_only_named() {
    let config = Config::parse(
        r#"
        [[hooks]]
        name = "deploy"
        secret_env = "SWARM_TEST_SURELY_UNSET_HOOK_SECRET"
        tolerance = "2m"
        template = { goal = { "$payload" = "/message" } }
        "#,
    )
    .unwrap();
    let hook = &config.hooks[0];
    assert_eq!(hook.name, "deploy");
    assert_eq!(hook.secret_env, "SWARM_TEST_SURELY_UNSET_HOOK_SECRET");
    assert_eq!(hook.tolerance, Some(std::time::Duration::from_secs(120)));
    assert_eq!(
        hook.template,
        serde_json::json!({ "goal": { "$payload": "/message" } })
    );
    // What the log keeps of it: the fields as given, the secret only by its variable.
    let fields = serde_json::to_value(hook).unwrap();
    assert_eq!(fields["tolerance"], "2m");
    assert_eq!(serde_json::from_value::<HookConfig>(fields).unwrap(), *hook);
}

/// The document's `Provider` lists exactly what the agents crate accepts.
#[test]
fn provider_schema_names_the_providers() {
    use utoipa::PartialSchema as _;
    let schema = serde_json::to_value(ProviderSchema::schema()).unwrap();
    let names = schema["enum"].as_array().unwrap();
    assert_eq!(names.len(), 2);
    for name in names {
        serde_json::from_value::<Provider>(name.clone()).unwrap();
    }
}

const GOOD: &str = r#"
[store]
data_dir = "d"
retention = "7d"

[[agents]]
name = "a"
provider = "openai"
base_url = "http://127.0.0.1:1/v1"
model = "m"
api_key_env = "SWARM_TEST_KEY"
capabilities = ["write"]
rpm = 60
breaker = { consecutive_failures = 3, cool_down = "10s" }

[[agents]]
name = "b"
provider = "anthropic"
base_url = "https://api.anthropic.com/v1"
model = "claude"
capabilities = ["write", "review"]
description = "Writes and reviews."
"#;

#[test]
fn a_good_file_parses_with_defaults_filled_in() {
    let config = Config::parse(GOOD).unwrap();
    assert_eq!(
        config.store.retention,
        Some(Duration::from_secs(7 * 86_400))
    );
    assert_eq!(config.agents.len(), 2);
    let a = &config.agents[0];
    assert_eq!(a.rpm.map(NonZeroU32::get), Some(60));
    assert_eq!(a.breaker.consecutive_failures, 3);
    assert_eq!(a.breaker.cool_down, Duration::from_secs(10));
    assert_eq!(a.concurrency.get(), 8);
    assert_eq!(config.agents[1].provider, Some(Provider::Anthropic));
    assert!(config.agents[1].stream);
}

#[test]
fn errors_name_the_key_and_the_line() {
    let bad = GOOD.replace("rpm = 60", "rpm = 0");
    let err = Config::parse(&bad).unwrap_err();
    assert!(err.contains("line 13") && err.contains("rpm"), "{err}");

    let bad = GOOD.replace("model = \"m\"", "model = \"m\"\nmodle = \"x\"");
    let err = Config::parse(&bad).unwrap_err();
    assert!(err.contains("modle") && err.contains("line 11"), "{err}");

    let bad = GOOD.replace(
        "capabilities = [\"write\"]",
        "capabilities = [\"no spaces\"]",
    );
    let err = Config::parse(&bad).unwrap_err();
    assert!(
        err.contains("capabilities") && err.contains("line"),
        "{err}"
    );

    let bad = GOOD.replace("provider = \"openai\"", "provider = \"gemini\"");
    let err = Config::parse(&bad).unwrap_err();
    assert!(err.contains("provider") && err.contains("gemini"), "{err}");
}

#[test]
fn the_server_section_is_optional_and_checked() {
    assert_eq!(
        Config::parse(GOOD).unwrap().server,
        ServerSection::default()
    );
    let with = format!("{GOOD}\n[server]\nclient_burst = 50\nsecure_cookies = true\n");
    let server = Config::parse(&with).unwrap().server;
    assert_eq!(server.client_burst.map(NonZeroU32::get), Some(50));
    assert_eq!(server.secure_cookies, Some(true));
    assert_eq!(server.backlog_max, None);
    let err = Config::parse(&with.replace("client_burst = 50", "client_burst = 0")).unwrap_err();
    assert!(err.contains("client_burst"), "{err}");
    let err = Config::parse(&with.replace("client_burst", "client_bust")).unwrap_err();
    assert!(err.contains("client_bust"), "{err}");
}

#[test]
fn limits_may_lower_the_ceilings_but_not_raise_them() {
    let config = Config::parse("[limits]\njson_depth_max = 8\nmax_depth = 3\n").unwrap();
    assert_eq!(config.limits.json().json_depth_max, 8);
    let mut asked = Limits {
        max_depth: 1000,
        max_tasks: 5,
        ..Limits::default()
    };
    config.limits.clamp(&mut asked);
    assert_eq!((asked.max_depth, asked.max_tasks), (3, 5));
    let err = Config::parse("[limits]\njson_depth_max = 65\n").unwrap_err();
    assert!(err.contains("limits.json_depth_max"), "{err}");
    let err = Config::parse("[limits]\nmax_tasks = 0\n").unwrap_err();
    assert!(err.contains("limits.max_tasks"), "{err}");
}

#[test]
fn durations_past_a_year_are_refused_naming_the_key() {
    let bad = GOOD.replace(
        "rpm = 60",
        "rpm = 60\nhard_timeout = \"10000000000000000000s\"",
    );
    let err = Config::parse(&bad).unwrap_err();
    assert!(
        err.contains("agents[0]") && err.contains("hard_timeout"),
        "{err}"
    );
    let bad = GOOD.replace("cool_down = \"10s\"", "cool_down = \"400days\"");
    let err = Config::parse(&bad).unwrap_err();
    assert!(err.contains("breaker.cool_down"), "{err}");
    let bad = GOOD.replace("retention = \"7d\"", "retention = \"500years\"");
    let err = Config::parse(&bad).unwrap_err();
    assert!(err.contains("store.retention"), "{err}");
}

#[test]
fn request_extras_parse_and_bad_ones_are_named() {
    let with = GOOD.replace(
        "rpm = 60",
        "rpm = 60\nheaders = { \"api-key\" = { env = \"AZURE_KEY\" }, \"x-team\" = \"blue\" }\n\
         query = { \"api-version\" = \"2024-10-21\" }\nmax_tokens_field = \"max_completion_tokens\"",
    );
    let config = Config::parse(&with).unwrap();
    let a = &config.agents[0];
    assert_eq!(
        a.headers.0["api-key"],
        HeaderSource::Env {
            env: "AZURE_KEY".into()
        }
    );
    assert_eq!(a.headers.0["x-team"], HeaderSource::Value("blue".into()));
    assert_eq!(a.query["api-version"], "2024-10-21");
    assert_eq!(a.max_tokens_field, MaxTokensField::MaxCompletionTokens);
    assert_eq!(config.agents[1].max_tokens_field, MaxTokensField::Auto);
    let shown = format!("{a:?}");
    assert!(
        shown.contains("$AZURE_KEY") && !shown.contains("blue"),
        "{shown}"
    );
    // What the log keeps: the same, read back; nothing for an agent without them.
    let fields = serde_json::to_value(a).unwrap();
    assert_eq!(fields["headers"]["api-key"]["env"], "AZURE_KEY");
    assert_eq!(serde_json::from_value::<AgentConfig>(fields).unwrap(), *a);
    let plain = serde_json::to_value(&config.agents[1]).unwrap();
    assert!(
        plain.get("headers").is_none() && plain.get("max_tokens_field").is_none(),
        "{plain}"
    );

    let err = Config::parse(&with.replace("\"x-team\"", "\"x team\"")).unwrap_err();
    assert!(
        err.contains("agents[0]") && err.contains("headers") && err.contains("`x team`"),
        "{err}"
    );
    let err = Config::parse(&with.replace("env = \"AZURE_KEY\"", "env = \"\"")).unwrap_err();
    assert!(err.contains("api-key"), "{err}");
    let err = Config::parse(&with.replace("max_completion_tokens", "max_toks")).unwrap_err();
    assert!(err.contains("max_tokens_field"), "{err}");
    let anthropic = GOOD.replace(
        "description = \"Writes and reviews.\"",
        "max_tokens_field = \"max_completion_tokens\"",
    );
    let err = Config::parse(&anthropic).unwrap_err();
    assert!(
        err.contains("agents[1]") && err.contains("max_tokens_field"),
        "{err}"
    );
}

#[test]
fn checks_beyond_types_name_the_agent_and_key() {
    let bad = GOOD.replace("name = \"b\"", "name = \"a\"");
    let err = Config::parse(&bad).unwrap_err();
    assert!(err.contains("agents[1]") && err.contains("name"), "{err}");
    let bad = GOOD.replace("http://127.0.0.1:1/v1", "ftp://x");
    let err = Config::parse(&bad).unwrap_err();
    assert!(
        err.contains("agents[0]") && err.contains("base_url"),
        "{err}"
    );
}

const ACCOUNTS: &str = r#"
[[accounts]]
name = "main"
provider = "openai"
base_url = "http://127.0.0.1:1/v1"
api_key_env = "SWARM_TEST_KEY"
rpm = 100
tpm = 50000
concurrency = 4

[[agents]]
name = "fast"
account = "main"
model = "small"
capabilities = ["write"]
fallbacks = ["smaller-model"]

[[agents]]
name = "careful"
account = "main"
model = "big"
capabilities = ["write"]
fallbacks = ["fast"]
"#;

#[test]
fn agents_on_an_account_take_its_endpoint_and_leave_its_limits_to_it() {
    let config = Config::parse(ACCOUNTS).unwrap();
    let account = &config.accounts[0];
    assert_eq!(account.rpm.map(NonZeroU32::get), Some(100));
    assert_eq!(account.concurrency.map(NonZeroU32::get), Some(4));
    let endpoint = config.agents[0].check(&config.accounts).unwrap();
    assert_eq!(
        endpoint,
        Endpoint {
            provider: Provider::Openai,
            base_url: "http://127.0.0.1:1/v1".into(),
            api_key_env: Some("SWARM_TEST_KEY".into()),
        }
    );
    assert_eq!(config.agents[1].fallbacks, ["fast"]);
    // What the log keeps of an agent on an account: its own fields only.
    let fields = serde_json::to_value(&config.agents[0]).unwrap();
    assert_eq!(fields["account"], "main");
    assert!(fields.get("provider").is_none(), "{fields}");
    assert_eq!(
        serde_json::from_value::<AgentConfig>(fields).unwrap(),
        config.agents[0]
    );
}

#[test]
fn account_mistakes_name_the_entry_and_key() {
    for (from, to, expected) in [
        (
            "account = \"main\"\nmodel = \"small\"",
            "account = \"other\"\nmodel = \"small\"",
            "agents[0] (`fast`).account: no account is named `other`",
        ),
        (
            "account = \"main\"\nmodel = \"big\"",
            "account = \"main\"\nmodel = \"big\"\nrpm = 5",
            "agents[1] (`careful`).rpm: the quotas are account `main`'s",
        ),
        (
            "account = \"main\"\nmodel = \"big\"",
            "account = \"main\"\nmodel = \"big\"\nbreaker = { consecutive_failures = 2 }",
            "agents[1] (`careful`).breaker: the breaker is account `main`'s",
        ),
        (
            "account = \"main\"\nmodel = \"big\"",
            "account = \"main\"\nmodel = \"big\"\nbase_url = \"http://elsewhere/v1\"",
            "agents[1] (`careful`).base_url: `http://elsewhere/v1` differs",
        ),
        (
            "account = \"main\"\nmodel = \"big\"",
            "model = \"big\"",
            "agents[1] (`careful`).provider: required (or name an account)",
        ),
        (
            "fallbacks = [\"fast\"]",
            "fallbacks = [\"careful\"]",
            "agents[1] (`careful`).fallbacks: `careful` is the agent itself",
        ),
        (
            "fallbacks = [\"smaller-model\"]",
            "fallbacks = [\"careful\"]",
            "agents[0] (`fast`).fallbacks: `careful` is declared after this agent",
        ),
        (
            "rpm = 100",
            "rpm = 100\nbreaker = { consecutive_failures = 0 }",
            "accounts[0] (`main`).breaker.consecutive_failures",
        ),
    ] {
        assert!(ACCOUNTS.contains(from), "{from}");
        let err = Config::parse(&ACCOUNTS.replacen(from, to, 1)).unwrap_err();
        assert!(err.contains(expected), "{err}\nexpected: {expected}");
    }
    let twice = format!(
        "{ACCOUNTS}\n[[accounts]]\nname = \"main\"\nprovider = \"openai\"\nbase_url = \"http://x/v1\"\n"
    );
    let err = Config::parse(&twice).unwrap_err();
    assert!(
        err.contains("accounts[1] (`main`).name: another account has this name"),
        "{err}"
    );
}
