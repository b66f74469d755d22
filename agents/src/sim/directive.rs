//! The per-request directive grammar (documented in the module above): parsing a model name
//! and an `x-sim` header into overrides, and running the fault script.

use super::config::{check_delay, check_rate, check_status, check_tokens};

/// Overrides of the server-wide config for one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Directives {
    pub(super) json: bool,
    /// Play the swarm's planner (see `plan.rs`).
    pub(super) plan: bool,
    /// Anthropic streams: report the input tokens in `message_delta`, not `message_start`.
    pub(super) late_usage: bool,
    /// Answer a streamed request with the whole JSON answer.
    pub(super) no_stream: bool,
    pub(super) seed: Option<u64>,
    pub(super) tokens: Option<(u32, u32)>,
    pub(super) first_token_ms: Option<(u64, u64)>,
    pub(super) per_token_ms: Option<(u64, u64)>,
    pub(super) stall_after: Option<u32>,
    pub(super) error_rate: Option<f64>,
    /// The fault script, in the order written.
    pub(super) faults: Vec<Fault>,
}

/// One step of the fault script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fault {
    pub(super) kind: FaultKind,
    /// How many requests this step covers; `None` covers every later one.
    pub(super) times: Option<u32>,
}

/// What a fault answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FaultKind {
    /// This status, with the provider's error body for it.
    Status(u16),
    /// 429 with `Retry-After` in seconds.
    RateLimited { retry_after_secs: u64 },
}

/// Splits a model name into its name (before the first `:`) and directives, then applies the
/// header's directives over them.
pub(super) fn parse<'a>(
    model: &'a str,
    header: Option<&str>,
) -> Result<(&'a str, Directives), String> {
    let (name, rest) = model.split_once(':').unwrap_or((model, ""));
    let mut directives = Directives::default();
    for segment in segments(rest) {
        directives
            .apply(segment)
            .map_err(|err| format!("model `{model}`: {err}"))?;
    }
    for segment in segments(header.unwrap_or("")) {
        directives
            .apply(segment)
            .map_err(|err| format!("header x-sim: {err}"))?;
    }
    Ok((name, directives))
}

fn segments(text: &str) -> impl Iterator<Item = &str> {
    text.split([':', ','])
        .map(str::trim)
        .filter(|segment| !segment.is_empty())
}

impl Directives {
    fn apply(&mut self, segment: &str) -> Result<(), String> {
        let (key, value) = segment.split_once('=').unwrap_or((segment, ""));
        match key {
            "json" if value.is_empty() => self.json = true,
            "plan" if value.is_empty() => self.plan = true,
            "late_usage" if value.is_empty() => self.late_usage = true,
            "nostream" if value.is_empty() => self.no_stream = true,
            "seed" => self.seed = Some(number(key, value)?),
            "tokens" => {
                let range = range(key, value)?;
                check_tokens(key, range)?;
                self.tokens = Some(range);
            }
            "ttft" => {
                let range = range(key, value)?;
                check_delay(key, range)?;
                self.first_token_ms = Some(range);
            }
            "tpt" => {
                let range = range(key, value)?;
                check_delay(key, range)?;
                self.per_token_ms = Some(range);
            }
            "stall" => self.stall_after = Some(number(key, value)?),
            "err" => {
                let rate: f64 = number(key, value)?;
                check_rate(key, rate)?;
                self.error_rate = Some(rate);
            }
            "fail" => {
                let (status, times) = counted(key, value)?;
                check_status(key, status)?;
                self.faults.push(Fault {
                    kind: FaultKind::Status(status),
                    times,
                });
            }
            "429" => {
                let (retry_after_secs, times) = counted(key, value)?;
                self.faults.push(Fault {
                    kind: FaultKind::RateLimited { retry_after_secs },
                    times,
                });
            }
            _ => return Err(format!("unknown sim directive `{segment}`")),
        }
        Ok(())
    }

    /// Whether the script depends on how many requests the scenario has seen.
    pub(super) fn is_counted(&self) -> bool {
        self.faults.iter().any(|fault| fault.times.is_some())
    }

    /// The fault for the scenario's request number `index` (0-based), if any.
    pub(super) fn fault_at(&self, index: u64) -> Option<FaultKind> {
        let mut start = 0u64;
        for fault in &self.faults {
            match fault.times {
                None => return Some(fault.kind),
                Some(times) => {
                    start += u64::from(times);
                    if index < start {
                        return Some(fault.kind);
                    }
                }
            }
        }
        None
    }
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("`{key}={value}`: `{value}` is not a valid number"))
}

/// `N` or `N-M`.
fn range<T: std::str::FromStr + Copy>(key: &str, value: &str) -> Result<(T, T), String> {
    match value.split_once('-') {
        Some((min, max)) => Ok((number(key, min)?, number(key, max)?)),
        None => {
            let n = number(key, value)?;
            Ok((n, n))
        }
    }
}

/// `V` or `VxN`.
fn counted<T: std::str::FromStr>(key: &str, value: &str) -> Result<(T, Option<u32>), String> {
    match value.split_once('x') {
        Some((value, times)) => Ok((number(key, value)?, Some(number(key, times)?))),
        None => Ok((number(key, value)?, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_name_has_no_directives() {
        let (name, directives) = parse("gpt-4o-mini", None).unwrap();
        assert_eq!(name, "gpt-4o-mini");
        assert_eq!(directives, Directives::default());
    }

    #[test]
    fn every_directive_parses() {
        let (name, d) = parse(
            "sim:json:seed=7:tokens=3-5,ttft=100:tpt=10-20:stall=2:err=0.25:fail=503x2:429=3",
            None,
        )
        .unwrap();
        assert_eq!(name, "sim");
        assert!(d.json);
        assert_eq!(d.seed, Some(7));
        assert_eq!(d.tokens, Some((3, 5)));
        assert_eq!(d.first_token_ms, Some((100, 100)));
        assert_eq!(d.per_token_ms, Some((10, 20)));
        assert_eq!(d.stall_after, Some(2));
        assert_eq!(d.error_rate, Some(0.25));
        assert_eq!(
            d.faults,
            vec![
                Fault {
                    kind: FaultKind::Status(503),
                    times: Some(2)
                },
                Fault {
                    kind: FaultKind::RateLimited {
                        retry_after_secs: 3
                    },
                    times: None
                },
            ]
        );
    }

    #[test]
    fn the_flags_parse() {
        let (name, d) = parse("sim:plan:late_usage", Some("nostream")).unwrap();
        assert_eq!(name, "sim");
        assert!(d.plan && d.late_usage && d.no_stream && !d.json);
    }

    #[test]
    fn the_header_overrides_the_model_and_extends_the_script() {
        let (_, d) = parse("sim:stall=2:fail=500x1", Some("stall=5, 429=1x1")).unwrap();
        assert_eq!(d.stall_after, Some(5));
        assert_eq!(d.faults.len(), 2);
        assert_eq!(
            d.faults[1].kind,
            FaultKind::RateLimited {
                retry_after_secs: 1
            }
        );
    }

    #[test]
    fn the_script_runs_in_order() {
        let (_, d) = parse("sim:429=2x1:fail=500x2", None).unwrap();
        assert!(d.is_counted());
        assert_eq!(
            d.fault_at(0),
            Some(FaultKind::RateLimited {
                retry_after_secs: 2
            })
        );
        assert_eq!(d.fault_at(1), Some(FaultKind::Status(500)));
        assert_eq!(d.fault_at(2), Some(FaultKind::Status(500)));
        assert_eq!(d.fault_at(3), None);
        let (_, always) = parse("sim:fail=401", None).unwrap();
        assert!(!always.is_counted());
        assert_eq!(always.fault_at(1_000), Some(FaultKind::Status(401)));
    }

    #[test]
    fn mistakes_are_named() {
        let err = parse("sim:stal=3", None).unwrap_err();
        assert!(err.contains("unknown sim directive `stal=3`"), "{err}");
        let err = parse("sim:fail=200", None).unwrap_err();
        assert!(err.contains("not an error status"), "{err}");
        let err = parse("sim:tokens=9-3", None).unwrap_err();
        assert!(err.contains("above max"), "{err}");
        let err = parse("sim", Some("err=2")).unwrap_err();
        assert!(err.starts_with("header x-sim"), "{err}");
        assert!(parse("sim:fail=500xq", None).is_err());
        assert!(parse("sim:json=1", None).is_err());
        assert!(parse("sim:plan=2", None).is_err());
    }
}
