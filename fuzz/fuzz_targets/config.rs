//! `swarm.toml`: the coordinator's configuration file, parsed and checked as `swarm serve`
//! reads it.
//!
//! Properties: nothing panics; parsing is deterministic; a file that is accepted declares
//! agents that pass the checks the parser promises (names unique and non-blank, at least one
//! capability, an http(s) base URL).

#![no_main]

use libfuzzer_sys::fuzz_target;
use swarm_coordinator::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = Config::parse(text);
    // Compared as text: `temperature = nan` parses, and NaN equals nothing.
    assert_eq!(
        format!("{parsed:?}"),
        format!("{:?}", Config::parse(text)),
        "parsing is deterministic"
    );
    if let Ok(config) = parsed {
        let mut names = std::collections::BTreeSet::new();
        for agent in &config.agents {
            assert!(!agent.name.trim().is_empty());
            assert!(names.insert(agent.name.as_str()));
            assert!(!agent.capabilities.is_empty());
            // An agent on an account takes its base URL from it (which is checked as well).
            if let Some(url) = &agent.base_url {
                assert!(url.starts_with("http://") || url.starts_with("https://"));
            }
        }
        for account in &config.accounts {
            assert!(
                account.base_url.starts_with("http://") || account.base_url.starts_with("https://")
            );
        }
    }
});
