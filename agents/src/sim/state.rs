//! What both provider front ends share: the server's state, and the decision, per request,
//! between an answer (a [`Plan`]) and a refusal (a status with its reason), in the order the
//! module docs give.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use fastrand::Rng;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::config::SimConfig;
use super::directive::{self, FaultKind};
use super::output::{self, Message, Shape};
use super::stats::{Endpoint, Served, SimStats};

/// The most scenarios with a counted fault script (or a `$sim_replies` script) one server
/// tracks; a request naming a new one beyond that is refused, rather than the map growing
/// without bound.
const SCENARIOS_MAX: usize = 4096;
/// The most answered requests [`SimState::served`] keeps, newest last; older ones are dropped.
pub(super) const SERVED_KEPT_MAX: usize = 100_000;
/// The rate limit's window.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// Mixed into the content hash to seed the latency draws, so changing the latency config
/// does not change the content.
const TIMING_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

/// The state every handler shares.
#[derive(Debug)]
pub(super) struct SimState {
    config: SimConfig,
    /// Draws for `error_rate`: server-wide rather than per request, so a retry of a failed
    /// request can succeed, yet still a fixed sequence for a given seed.
    errors: Mutex<Rng>,
    /// Requests seen per scenario with a counted fault script, and answers given per scenario
    /// and `$sim_replies` script.
    scenarios: Mutex<HashMap<String, u64>>,
    window: Mutex<Option<Window>>,
    stats: Mutex<SimStats>,
    /// The answered requests, oldest first, at most [`SERVED_KEPT_MAX`].
    served: Mutex<VecDeque<Served>>,
    sequence: AtomicU64,
    stopped: watch::Receiver<bool>,
}

/// The rate limit's current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    used: u32,
}

/// One request, normalised across providers.
#[derive(Debug)]
pub(super) struct SimRequest<'a> {
    pub(super) model: &'a str,
    pub(super) messages: Vec<Message>,
    pub(super) max_tokens: Option<u32>,
    pub(super) shape: Shape,
    pub(super) headers: &'a HeaderMap,
}

/// An answer to deliver.
#[derive(Debug)]
pub(super) struct Plan {
    /// Unique per server, for response ids.
    pub(super) sequence: u64,
    /// The model name as requested, directives included.
    pub(super) model: String,
    pub(super) pieces: Vec<String>,
    /// Whether `max_tokens` cut the answer.
    pub(super) truncated: bool,
    pub(super) prompt_tokens: u32,
    pub(super) first_token: Duration,
    pub(super) per_token: Duration,
    pub(super) stall_after: Option<u32>,
    pub(super) rate: Option<RateInfo>,
    /// Anthropic streams: the input tokens in `message_delta` (`late_usage`).
    pub(super) late_usage: bool,
    /// A streamed request gets the whole JSON answer (`nostream`).
    pub(super) no_stream: bool,
}

/// An error answer, rendered in the provider's shape.
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) status: u16,
    pub(super) message: String,
    /// The request field at fault, for 400s.
    pub(super) param: Option<&'static str>,
    pub(super) retry_after_secs: Option<u64>,
    pub(super) rate: Option<RateInfo>,
}

/// The rate-limit headers' values.
#[derive(Debug, Clone, Copy)]
pub(super) struct RateInfo {
    pub(super) limit: Option<u32>,
    pub(super) remaining: u32,
    pub(super) reset_secs: u64,
}

/// One server-sent event and the delay before it.
pub(super) type Step = (Duration, Event);

/// The body of a streamed answer.
pub(super) type EventStream = Sse<BoxStream<'static, Result<Event, Infallible>>>;

impl SimState {
    pub(super) fn new(config: SimConfig, stopped: watch::Receiver<bool>) -> Self {
        Self {
            errors: Mutex::new(Rng::with_seed(config.seed)),
            config,
            scenarios: Mutex::new(HashMap::new()),
            window: Mutex::new(None),
            stats: Mutex::new(SimStats::default()),
            served: Mutex::new(VecDeque::new()),
            sequence: AtomicU64::new(0),
            stopped,
        }
    }

    pub(super) fn config(&self) -> &SimConfig {
        &self.config
    }

    pub(super) fn stats(&self) -> SimStats {
        lock(&self.stats).clone()
    }

    pub(super) fn record(&self, endpoint: Endpoint, status: u16, headers: &HeaderMap) {
        let traceparent = headers
            .get("traceparent")
            .and_then(|value| value.to_str().ok());
        lock(&self.stats).record(endpoint, status, traceparent);
        tracing::debug!(?endpoint, status, "sim model request");
    }

    /// The requests answered so far, oldest first (at most [`SERVED_KEPT_MAX`]).
    pub(super) fn served(&self) -> Vec<Served> {
        lock(&self.served).iter().copied().collect()
    }

    /// Notes a request answered by `plan` (its arrival is now).
    pub(super) fn note_served(&self, endpoint: Endpoint, plan: &Plan) {
        let served = Served {
            at: Instant::now(),
            endpoint,
            tokens: u64::from(plan.prompt_tokens) + u64::from(plan.completion_tokens()),
        };
        let mut log = lock(&self.served);
        if log.len() == SERVED_KEPT_MAX {
            log.pop_front();
        }
        log.push_back(served);
    }

    /// Answers or refuses `request`.
    pub(super) fn decide(&self, request: SimRequest<'_>) -> Result<Plan, Refusal> {
        let sim_header = header(request.headers, "x-sim")?;
        let (name, directives) = directive::parse(request.model, sim_header)
            .map_err(|message| Refusal::invalid(message, Some("model")))?;
        if request.max_tokens == Some(0) {
            return Err(Refusal::invalid(
                "max_tokens must be at least 1".into(),
                Some("max_tokens"),
            ));
        }
        let scenario = || -> Result<String, Refusal> {
            Ok(match header(request.headers, "x-sim-scenario")? {
                Some(scenario) => scenario.to_owned(),
                None => format!("{}|{}", request.model, sim_header.unwrap_or("")),
            })
        };
        let index = if directives.is_counted() {
            self.next_index(scenario()?)?
        } else {
            0
        };
        if let Some(fault) = directives.fault_at(index) {
            return Err(self.fault(fault));
        }
        if let Some(status) = self.config.fail_with {
            return Err(Refusal::status(status));
        }
        let rate = self.admit()?;
        let error_rate = directives.error_rate.unwrap_or(self.config.error_rate);
        if error_rate > 0.0 && lock(&self.errors).f64() < error_rate {
            return Err(Refusal::status(self.config.error_status));
        }

        let hash = output::request_hash(
            directives.seed.unwrap_or(self.config.seed),
            name,
            &request.messages,
        );
        let shape = match request.shape {
            Shape::Text if directives.json => Shape::JsonObject,
            shape => shape,
        };
        let tokens = directives.tokens.unwrap_or(self.config.tokens);
        // Counted only for a request that is answered, so a refused one takes no reply.
        let scripted = match output::replies(&request.messages) {
            Some((replies, script)) => {
                let index =
                    self.next_index(format!("{}|$sim_replies|{script:016x}", scenario()?))?;
                let last = replies.len().saturating_sub(1);
                let at = usize::try_from(index).map_or(last, |i| i.min(last));
                replies.into_iter().nth(at)
            }
            None => None,
        };
        let planned = directives
            .plan
            .then(|| super::plan::answer(output::last_user(&request.messages)));
        let mut pieces = output::pieces(
            &mut Rng::with_seed(hash),
            tokens,
            &shape,
            &request.messages,
            scripted,
            planned.as_ref().or_else(|| self.config.replies.get(name)),
        );
        let max = request.max_tokens.map_or(usize::MAX, |max| max as usize);
        let truncated = pieces.len() > max;
        pieces.truncate(max);

        let mut timing = Rng::with_seed(hash ^ TIMING_SALT);
        let mut draw = |(min, max): (u64, u64)| Duration::from_millis(timing.u64(min..=max));
        let first_token = draw(
            directives
                .first_token_ms
                .unwrap_or(self.config.latency.first_token_ms),
        );
        let per_token = draw(
            directives
                .per_token_ms
                .unwrap_or(self.config.latency.per_token_ms),
        );
        Ok(Plan {
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed),
            model: request.model.to_owned(),
            pieces,
            truncated,
            prompt_tokens: output::prompt_tokens(&request.messages),
            first_token,
            per_token,
            stall_after: directives.stall_after.or(self.config.stall_after),
            rate,
            late_usage: directives.late_usage,
            no_stream: directives.no_stream,
        })
    }

    /// The scenario's request number (0-based), counting this one.
    fn next_index(&self, scenario: String) -> Result<u64, Refusal> {
        let mut scenarios = lock(&self.scenarios);
        if scenarios.len() >= SCENARIOS_MAX && !scenarios.contains_key(&scenario) {
            return Err(Refusal::invalid(
                format!("the sim server tracks at most {SCENARIOS_MAX} counted scenarios"),
                Some("model"),
            ));
        }
        let seen = scenarios.entry(scenario).or_default();
        let index = *seen;
        *seen += 1;
        Ok(index)
    }

    fn fault(&self, fault: FaultKind) -> Refusal {
        match fault {
            FaultKind::Status(status) => Refusal::status(status),
            FaultKind::RateLimited { retry_after_secs } => Refusal {
                retry_after_secs: Some(retry_after_secs),
                rate: Some(RateInfo {
                    limit: self.config.rate_limit,
                    remaining: 0,
                    reset_secs: retry_after_secs,
                }),
                ..Refusal::status(429)
            },
        }
    }

    /// Counts the request against the rate limit, if one is configured.
    fn admit(&self) -> Result<Option<RateInfo>, Refusal> {
        let Some(limit) = self.config.rate_limit else {
            return Ok(None);
        };
        let now = Instant::now();
        let mut window = lock(&self.window);
        let mut current = match *window {
            Some(current) if now.duration_since(current.start) < RATE_WINDOW => current,
            _ => Window {
                start: now,
                used: 0,
            },
        };
        let left = RATE_WINDOW.saturating_sub(now.duration_since(current.start));
        let reset_secs = u64::try_from(left.as_millis().div_ceil(1000))
            .unwrap_or(u64::MAX)
            .max(1);
        if current.used >= limit {
            *window = Some(current);
            return Err(Refusal {
                message: format!("rate limit of {limit} requests per minute reached (simulated)"),
                retry_after_secs: Some(reset_secs),
                rate: Some(RateInfo {
                    limit: Some(limit),
                    remaining: 0,
                    reset_secs,
                }),
                ..Refusal::status(429)
            });
        }
        current.used += 1;
        *window = Some(current);
        Ok(Some(RateInfo {
            limit: Some(limit),
            remaining: limit - current.used,
            reset_secs,
        }))
    }

    /// Waits `delay`; false if the server began to stop first.
    pub(super) async fn wait(&self, delay: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = stopped(self.stopped.clone()) => false,
        }
    }

    /// Resolves once the server begins to stop.
    pub(super) async fn until_stopped(&self) {
        stopped(self.stopped.clone()).await;
    }

    /// Waits as long as a whole (non-streamed) answer takes; a stalled plan never answers.
    /// False if the server began to stop first.
    pub(super) async fn delivered(&self, plan: &Plan) -> bool {
        if plan.stalls() {
            self.until_stopped().await;
            false
        } else {
            self.wait(plan.total_delay()).await
        }
    }

    /// Sends `steps`, each after its delay; then, if `stall`, nothing more, never ending. The
    /// stream ends early when the server begins to stop.
    pub(super) fn event_stream(&self, steps: Vec<Step>, stall: bool) -> EventStream {
        let sent = stream::iter(steps).then(|(delay, event)| async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(event)
        });
        let body = if stall {
            sent.chain(stream::pending()).boxed()
        } else {
            sent.boxed()
        };
        Sse::new(body.take_until(stopped(self.stopped.clone())).boxed())
    }
}

impl Plan {
    pub(super) fn content(&self) -> String {
        self.pieces.concat()
    }

    pub(super) fn completion_tokens(&self) -> u32 {
        u32::try_from(self.pieces.len()).unwrap_or(u32::MAX)
    }

    /// Whether the answer never finishes.
    pub(super) fn stalls(&self) -> bool {
        self.stall_after.is_some()
    }

    /// The pieces a stream sends, each with the delay before it.
    pub(super) fn streamed_pieces(&self) -> impl Iterator<Item = (Duration, &str)> {
        let sent = self.stall_after.map_or(self.pieces.len(), |stall| {
            self.pieces.len().min(stall as usize)
        });
        self.pieces[..sent].iter().enumerate().map(|(i, piece)| {
            let delay = if i == 0 {
                Duration::ZERO
            } else {
                self.per_token
            };
            (delay, piece.as_str())
        })
    }

    /// How long a non-streamed answer takes: the first token's delay, then each later one's.
    pub(super) fn total_delay(&self) -> Duration {
        let later = u32::try_from(self.pieces.len().saturating_sub(1)).unwrap_or(u32::MAX);
        self.first_token + self.per_token.saturating_mul(later)
    }
}

impl Refusal {
    /// A 400 about the request.
    pub(super) fn invalid(message: String, param: Option<&'static str>) -> Self {
        Self {
            param,
            message,
            ..Self::status(400)
        }
    }

    /// `status` with a generic message.
    pub(super) fn status(status: u16) -> Self {
        let message = match status {
            400 => "invalid request (simulated)",
            401 => "invalid API key (simulated)",
            403 => "permission denied (simulated)",
            404 => "model not found (simulated)",
            429 => "rate limit reached (simulated)",
            500 => "internal server error (simulated)",
            503 => "service unavailable (simulated)",
            529 => "overloaded (simulated)",
            _ => "error (simulated)",
        };
        Self {
            status,
            message: message.to_owned(),
            param: None,
            retry_after_secs: None,
            rate: None,
        }
    }
}

/// Resolves once `stopped` turns true or its sender is gone.
pub(super) async fn stopped(mut stopped: watch::Receiver<bool>) {
    // An error means the handle is gone, which stops the server too.
    let _ = stopped.wait_for(|stopped| *stopped).await;
}

/// Seconds since the Unix epoch, for `created` fields.
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, Refusal> {
    headers
        .get(name)
        .map(|value| value.to_str())
        .transpose()
        .map_err(|_| Refusal::invalid(format!("header {name} is not visible ASCII"), None))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a few plain assignments that cannot leave the data
    // half-updated, so a poisoned lock's data is still good.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A refusal's answer in either format: its status, the format's rate-limit `headers`, a
/// `Retry-After` when it has one, and the format's error `body`.
pub(super) fn refusal_response(
    refusal: &Refusal,
    mut headers: axum::http::HeaderMap,
    body: serde_json::Value,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if let Some(secs) = refusal.retry_after_secs {
        headers.insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(secs),
        );
    }
    let status = axum::http::StatusCode::from_u16(refusal.status)
        .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    (status, headers, axum::Json(body)).into_response()
}
