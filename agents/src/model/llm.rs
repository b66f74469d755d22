//! The model agent itself.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures::StreamExt as _;
use serde_json::Value;
use swarm_protocol::{AgentStatus, FailureKind, Health, Price, Spent, Task, TaskOutcome};
use tokio::sync::watch;
use tracing::{Instrument as _, Span};

use super::account::Account;
use super::breaker::{self, Admission, Breaker, BreakerState, CallOutcome};
use super::limiter::RateLimiter;
use super::provider::{self, Prompt, Provider, StreamState, StreamStep, StreamedBody};
use super::{breaker_status, limiter_status};
use crate::actor::watch as watch_attempt;
use crate::agent::{Agent, HealthFeed, HealthReport};
use crate::context::TaskContext;
use crate::trace;

mod health;
mod prompt;
mod spans;
mod spec;

pub use prompt::render;
use spans::{inference_span, record_completion, record_request};
pub use spec::{ApiKey, ModelSpec};

/// An agent that calls a model API. Clones share the breaker and the limiter, so register it
/// with `AgentFactory::shared`: a restarted actor keeps the agent's breaker state and quota.
/// Built on an [`Account`], it shares the account's breaker, limiter and concurrency limit with
/// every other agent on it.
#[derive(Clone)]
pub struct LlmAgent {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    spec: ModelSpec,
    client: reqwest::Client,
    breaker: Arc<dyn Breaker>,
    limiter: Arc<RateLimiter>,
    account: Option<Account>,
    /// Where calls go, in order, while this agent cannot take them now.
    fallbacks: Vec<LlmAgent>,
    health: watch::Sender<HealthReport>,
    /// Set once a task follows the account's breaker for this agent's health.
    following: Arc<AtomicBool>,
    /// What the calls run in this agent's slots spent (on fallbacks too).
    spent: Arc<SpentCounters>,
}

/// Running totals of [`Spent`].
#[derive(Debug, Default)]
struct SpentCounters {
    cost_usd_micros: AtomicU64,
    unpriced_tokens: AtomicU64,
}

impl SpentCounters {
    fn add(&self, outcome: &TaskOutcome) {
        let Some(usage) = outcome.usage() else {
            return;
        };
        match usage.cost_usd_micros {
            Some(cost) => self.cost_usd_micros.fetch_add(cost, Ordering::Relaxed),
            None => self
                .unpriced_tokens
                .fetch_add(usage.tokens(), Ordering::Relaxed),
        };
    }

    fn read(&self) -> Spent {
        Spent {
            cost_usd_micros: self.cost_usd_micros.load(Ordering::Relaxed),
            unpriced_tokens: self.unpriced_tokens.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Debug for LlmAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmAgent")
            .field("spec", &self.inner.spec)
            .field("breaker", &self.inner.breaker.state())
            .finish_non_exhaustive()
    }
}

impl LlmAgent {
    /// An agent for `spec` behind its own `breaker` and `limiter`.
    pub fn new(
        spec: ModelSpec,
        breaker: Arc<dyn Breaker>,
        limiter: RateLimiter,
    ) -> Result<Self, String> {
        Self::build(spec, breaker, Arc::new(limiter), None)
    }

    /// An agent for `spec` on `account`: behind the account's breaker, limiter and
    /// concurrency limit, which it shares with every other agent on the account.
    pub fn on_account(spec: ModelSpec, account: &Account) -> Result<Self, String> {
        Self::build(
            spec,
            account.breaker(),
            Arc::clone(account.limiter()),
            Some(account.clone()),
        )
    }

    fn build(
        spec: ModelSpec,
        breaker: Arc<dyn Breaker>,
        limiter: Arc<RateLimiter>,
        account: Option<Account>,
    ) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(spec.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| format!("HTTP client for {}: {e}", spec.base_url))?;
        let (health, _) = watch::channel(HealthReport {
            health: Health::Up,
            reason: "circuit closed".into(),
        });
        Ok(Self {
            inner: Arc::new(Inner {
                spec,
                client,
                breaker,
                limiter,
                account,
                fallbacks: Vec::new(),
                health,
                following: Arc::new(AtomicBool::new(false)),
                spent: Arc::default(),
            }),
        })
    }

    /// The agent's circuit breaker.
    pub fn breaker(&self) -> &dyn Breaker {
        &*self.inner.breaker
    }

    /// The agent's rate limiter (its account's, if it has one).
    pub fn limiter(&self) -> &RateLimiter {
        &self.inner.limiter
    }

    /// This agent with `fallbacks`: agents whose model, breaker and limiter take a call, the
    /// first in order that can take it at once, when this agent cannot (its breaker is open,
    /// or its quota is spent or paused). The call runs in this agent's slot: a fallback that is
    /// a registered agent too lends its model, breaker and quota, not its concurrency. A
    /// fallback's own fallbacks are not followed. Call it before the agent is shared: its
    /// clones made before do not get the fallbacks.
    pub fn with_fallbacks(self, fallbacks: Vec<LlmAgent>) -> Self {
        let inner = Arc::unwrap_or_clone(self.inner);
        Self {
            inner: Arc::new(Inner { fallbacks, ..inner }),
        }
    }

    /// The same agent calling `model` instead, a model fallback: its API, key and account,
    /// with a breaker of its own (a model that is down says nothing of another), and `limiter`
    /// if given (the model's own quota), else this agent's (an account's quota is the key's,
    /// whatever the model).
    pub fn for_model(
        &self,
        model: &str,
        breaker: Arc<dyn Breaker>,
        limiter: Option<RateLimiter>,
    ) -> Result<Self, String> {
        let mut spec = self.inner.spec.clone();
        spec.model = model.to_owned();
        let limiter = match limiter {
            Some(own) => Arc::new(own),
            None => Arc::clone(&self.inner.limiter),
        };
        Self::build(spec, breaker, limiter, self.inner.account.clone())
    }

    /// Its fallbacks, in order.
    pub fn fallbacks(&self) -> &[LlmAgent] {
        &self.inner.fallbacks
    }

    /// True while its breaker is open.
    fn is_open(&self) -> bool {
        matches!(self.inner.breaker.state(), BreakerState::Open { .. })
    }

    /// True if a call of `tokens` could go out at once: its breaker is not open, its account
    /// has room, and its limiter would grant it now.
    fn can_take_now(&self, tokens: u32) -> bool {
        let closed = !self.is_open();
        let room = self
            .inner
            .account
            .as_ref()
            .and_then(Account::calls)
            .is_none_or(|calls| calls.available_permits() > 0);
        closed && room && self.inner.limiter.ready_now(tokens)
    }

    /// The account it shares its breaker and limiter with, if any.
    pub fn account(&self) -> Option<&Account> {
        self.inner.account.as_ref()
    }

    /// The agent's spec.
    pub fn spec(&self) -> &ModelSpec {
        &self.inner.spec
    }

    /// A permit for one call. While the breaker is open the attempt is declined at once (the
    /// agent is reported down, so the task goes to another agent or waits in the queue until
    /// this one recovers); while a half-open probe is in flight it waits for the probe's
    /// result.
    async fn admit(&self, ctx: &TaskContext) -> Result<breaker::Permit, TaskOutcome> {
        loop {
            match self.inner.breaker.admit() {
                Admission::Go(permit) => return Ok(permit),
                Admission::Wait(wait) => {
                    if let BreakerState::Open { .. } = self.inner.breaker.state() {
                        // The call that opened it published it, and on an account so did the
                        // follower; this covers an agent whose health nobody follows yet.
                        if self.inner.health.borrow().health == Health::Up {
                            self.publish_health("the account's circuit is open");
                        }
                        return Err(failure(
                            FailureKind::Declined,
                            format!(
                                "{}: circuit open for another {:.1}s",
                                self.inner.spec.model,
                                wait.as_secs_f64()
                            ),
                            None,
                            None,
                        ));
                    }
                    // Waiting for the probe is not a stall.
                    ctx.heartbeat();
                    tokio::time::sleep(
                        wait.clamp(Duration::from_millis(10), Duration::from_secs(1)),
                    )
                    .await;
                }
            }
        }
    }

    /// Takes the API key and the extra headers' values out of a message: some providers quote
    /// what they refused, and it must reach neither logs nor the event log.
    fn redact(&self, message: String) -> String {
        let spec = &self.inner.spec;
        let key = spec.api_key.as_ref().map(ApiKey::expose);
        key.into_iter()
            .chain(spec.extras.secrets())
            .filter(|secret| !secret.is_empty())
            .fold(message, |message, secret| {
                message.replace(secret, "<redacted>")
            })
    }

    async fn call(
        &self,
        task: &Task,
        prompt: &Prompt,
        ctx: &TaskContext,
        span: &Span,
    ) -> TaskOutcome {
        let spec = &self.inner.spec;
        let url = spec.provider.url(&spec.base_url);
        let body = provider::body(spec.provider, &spec.model, prompt, spec.max_tokens_field);
        let target = match with_query(&url, spec.extras.query()) {
            Ok(target) => target,
            Err(message) => return failure(FailureKind::Permanent, message, None, None),
        };
        let caller = trace::context_of(span);
        if caller.is_some() {
            record_request(span, &target, prompt, spec.capture_content);
        }
        let mut request = self
            .inner
            .client
            .post(target)
            .header("idempotency-key", task.idempotency_key())
            .json(&body);
        match spec.provider {
            Provider::Openai => {
                if let Some(key) = &spec.api_key {
                    request = request.bearer_auth(key.expose());
                }
            }
            Provider::Anthropic => {
                request = request.header("anthropic-version", "2023-06-01");
                if let Some(key) = &spec.api_key {
                    request = request.header("x-api-key", key.expose());
                }
            }
        }
        if !spec.extras.headers().is_empty() {
            // After the provider's headers, so a header named here replaces one of those.
            request = request.headers(spec.extras.headers().clone());
        }
        // The call's own span is the parent the provider sees (W3C Trace Context).
        if let Some(caller) = caller {
            request = request.header("traceparent", caller.traceparent);
            if let Some(state) = caller.tracestate {
                request = request.header("tracestate", state);
            }
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                return failure(
                    FailureKind::Transient,
                    format!(
                        "{} request to {url} failed: {}",
                        spec.model,
                        without_url(&err)
                    ),
                    None,
                    None,
                );
            }
        };
        let status = response.status();
        let pause =
            self.inner
                .limiter
                .observe(status.as_u16(), response.headers(), SystemTime::now());
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let message = format!(
                "{} answered {status}: {}",
                spec.model,
                provider::error_message(&text)
            );
            let message = self.redact(message);
            return match status.as_u16() {
                408 | 429 | 500..=599 => failure(FailureKind::Transient, message, None, pause),
                401 | 403 | 404 => {
                    self.report(Health::Down, format!("misconfigured: {message}"));
                    failure(FailureKind::Permanent, message, None, None)
                }
                _ => failure(FailureKind::Permanent, message, None, None),
            };
        }
        if !prompt.stream {
            return self.read_whole(response, prompt.json, span).await;
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        match StreamedBody::of(content_type.as_deref()) {
            StreamedBody::Events => self.read_stream(response, ctx, prompt.json, span).await,
            // A server that does not stream (some proxies and gateways) answers as if the
            // request had not asked to.
            StreamedBody::Json => self.read_whole(response, prompt.json, span).await,
            StreamedBody::Other(content_type) => failure(
                FailureKind::Permanent,
                format!(
                    "{} answered a streamed request with content type `{content_type}`, \
                     neither a stream of events (text/event-stream) nor JSON: is `base_url` \
                     the API's?",
                    spec.model
                ),
                None,
                None,
            ),
        }
    }

    /// Reads a whole (not streamed) JSON answer.
    async fn read_whole(
        &self,
        response: reqwest::Response,
        json: bool,
        span: &Span,
    ) -> TaskOutcome {
        let spec = &self.inner.spec;
        match response.json::<Value>().await {
            Ok(value) => match provider::parse_completion(spec.provider, &value) {
                Ok(completion) => finish(completion, json, spec, span),
                Err(err) => failure(
                    FailureKind::Transient,
                    format!("{} answer not understood: {err}", spec.model),
                    None,
                    None,
                ),
            },
            Err(err) => failure(
                FailureKind::Transient,
                format!("{} answer unreadable: {}", spec.model, without_url(&err)),
                None,
                None,
            ),
        }
    }

    async fn read_stream(
        &self,
        response: reqwest::Response,
        ctx: &TaskContext,
        json: bool,
        span: &Span,
    ) -> TaskOutcome {
        let provider = self.inner.spec.provider;
        let mut state = StreamState::default();
        let mut events = super::sse::events(response.bytes_stream());
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(err) => {
                    let partial = Some(Value::String(state.completion.text.clone()));
                    return failure(
                        FailureKind::Transient,
                        format!("the answer's stream broke: {err}"),
                        partial,
                        None,
                    );
                }
            };
            match state.step(provider, &event.event, &event.data) {
                Ok(StreamStep::Text(text)) => ctx.append_text(&text),
                Ok(StreamStep::Nothing) => ctx.heartbeat(),
                Ok(StreamStep::Done) => break,
                Err(message) => {
                    let partial = Some(Value::String(state.completion.text.clone()));
                    return failure(
                        FailureKind::Transient,
                        self.redact(format!("the provider sent an error mid-stream: {message}")),
                        partial,
                        None,
                    );
                }
            }
        }
        if !state.is_done() {
            let partial = Some(Value::String(state.completion.text.clone()));
            return failure(
                FailureKind::Transient,
                "the answer's stream ended before the answer was complete".into(),
                partial,
                None,
            );
        }
        finish(state.completion, json, &self.inner.spec, span)
    }
}

/// `url` with the query parameters appended (percent-encoded).
fn with_query(url: &str, query: &[(String, String)]) -> Result<reqwest::Url, String> {
    let mut url =
        reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a valid URL: {e}"))?;
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url)
}

/// A reqwest error's text without the URL's query (which could carry a key in some setups).
fn without_url(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    if let Some(url) = err.url() {
        let shown = format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.path()
        );
        text = text.replace(url.as_str(), &shown);
    }
    text
}

fn failure(
    kind: FailureKind,
    message: String,
    partial_output: Option<Value>,
    retry_after: Option<Duration>,
) -> TaskOutcome {
    TaskOutcome::Failed {
        kind,
        message,
        partial_output,
        usage: None,
        retry_after,
    }
}

/// The outcome of a complete answer: its text, or the JSON object it was asked to be, with
/// the usage priced at [`price`]. The answer's model, finish reason and usage go on the call's
/// span.
fn finish(
    completion: provider::Completion,
    json: bool,
    spec: &ModelSpec,
    span: &Span,
) -> TaskOutcome {
    if !span.is_disabled() {
        record_completion(span, &completion, spec.capture_content);
    }
    let mut usage = completion.usage;
    if let (Some(usage), Some(price)) = (&mut usage, price(spec, completion.model.as_deref())) {
        usage.cost_usd_micros = Some(price.cost_usd_micros(usage));
    }
    if !json {
        return TaskOutcome::Succeeded {
            output: Value::String(completion.text),
            usage,
        };
    }
    match serde_json::from_str::<Value>(completion.text.trim()) {
        Ok(value) => TaskOutcome::Succeeded {
            output: value,
            usage,
        },
        Err(err) => TaskOutcome::Failed {
            kind: FailureKind::InvalidOutput,
            message: format!("asked for JSON, the model answered something else: {err}"),
            partial_output: Some(Value::String(completion.text)),
            usage,
            retry_after: None,
        },
    }
}

/// The price of a call: the spec's model's, else that of the model that answered (the
/// provider's name for it, e.g. a dated version); `None` (an unknown cost) when neither is in
/// the table.
fn price<'a>(spec: &'a ModelSpec, answered: Option<&str>) -> Option<&'a Price> {
    spec.prices
        .get(&spec.model)
        .or_else(|| answered.and_then(|model| spec.prices.get(model)))
}

impl LlmAgent {
    /// One call on this agent's breaker, account and limiter, waiting for them as long as it
    /// takes (within the task's timeouts), and its outcome.
    async fn attempt(&self, task: &Task, ctx: &TaskContext) -> TaskOutcome {
        let prompt = match render(&self.inner.spec, task) {
            Ok(prompt) => prompt,
            Err(message) => return failure(FailureKind::Permanent, message, None, None),
        };
        let permit = match self.admit(ctx).await {
            Ok(permit) => permit,
            Err(declined) => return declined,
        };
        let tokens = prompt.estimated_tokens().saturating_add(prompt.max_tokens);
        // Waiting for the account's room and quota is not a stall either. Room first, so a
        // granted call goes out at once (the quota's bound is on when calls are sent).
        let _room = match self.inner.account.as_ref().and_then(Account::calls) {
            // The account never closes its semaphore, so `acquire_owned` never fails.
            Some(calls) => with_heartbeats(ctx, Arc::clone(calls).acquire_owned())
                .await
                .ok(),
            None => None,
        };
        let grant = match &self.inner.account {
            // On an account, a call that cannot have the quota now leaves the slot: see
            // `account`'s docs.
            Some(account) => match self.inner.limiter.try_acquire(tokens) {
                Ok(grant) => grant,
                Err(free_at) => {
                    account.cool_down(free_at);
                    // Published here too, before the report: the follower's task may run later.
                    self.publish_health("the account's quota");
                    self.inner.breaker.record(permit, CallOutcome::Neutral);
                    let wait = free_at.saturating_duration_since(tokio::time::Instant::now());
                    return failure(
                        FailureKind::Declined,
                        format!(
                            "{}: account `{}` has no quota for this call for another {:.1}s",
                            self.inner.spec.model,
                            account.name(),
                            wait.as_secs_f64()
                        ),
                        None,
                        Some(wait),
                    );
                }
            },
            None => {
                with_heartbeats(ctx, self.inner.limiter.acquire_for(tokens, task.priority)).await
            }
        };
        ctx.heartbeat();
        // The task's timeouts run inside the breaker's permit, so a stalled or slow call counts
        // as the failure it is (the agent actor's own watch has the same deadlines and is the
        // safety net).
        let span = inference_span(&self.inner.spec, &prompt);
        let outcome = watch_attempt(
            self.call(task, &prompt, ctx, &span)
                .instrument(span.clone()),
            ctx,
            task.idle_timeout.or(self.inner.spec.idle_timeout),
            task.hard_timeout.or(self.inner.spec.hard_timeout),
        )
        .await;
        trace::record_outcome(&span, &outcome);
        drop(span);
        let counted = match &outcome {
            TaskOutcome::Failed {
                kind: FailureKind::Transient | FailureKind::Timeout,
                ..
            } => CallOutcome::Failure,
            TaskOutcome::Failed {
                kind: FailureKind::Permanent,
                ..
            } => CallOutcome::Neutral,
            _ => CallOutcome::Success,
        };
        // The provider's count of the tokens corrects the estimate the quota was charged.
        let usage = match &outcome {
            TaskOutcome::Succeeded { usage, .. } | TaskOutcome::Failed { usage, .. } => *usage,
            _ => None,
        };
        if let Some(usage) = usage {
            self.inner.limiter.settle(
                &grant,
                usage.input_tokens.saturating_add(usage.output_tokens),
            );
        }
        self.inner.breaker.record(permit, counted);
        // A neutral result changes no breaker state (and must not undo a "misconfigured" down).
        if counted != CallOutcome::Neutral {
            let why = match &outcome {
                TaskOutcome::Failed { message, .. } => message.as_str(),
                _ => "",
            };
            self.publish_health(why);
        }
        outcome
    }
}

impl Agent for LlmAgent {
    async fn run(&self, task: Task, ctx: TaskContext) -> TaskOutcome {
        if !self.inner.fallbacks.is_empty() {
            // The estimate only decides whether the call fits a quota now; a prompt that does
            // not render fails in `attempt`, on whichever agent.
            let tokens = render(&self.inner.spec, &task)
                .map_or(0, |p| p.estimated_tokens().saturating_add(p.max_tokens));
            // The first fallback that can take the call at once; while this agent's breaker
            // is open, else the first whose breaker is not (it waits for its quota).
            let fallbacks = &self.inner.fallbacks;
            let chosen = if self.can_take_now(tokens) {
                None
            } else {
                fallbacks
                    .iter()
                    .find(|f| f.can_take_now(tokens))
                    .or_else(|| {
                        self.is_open()
                            .then(|| fallbacks.iter().find(|f| !f.is_open()))
                            .flatten()
                    })
            };
            if let Some(fallback) = chosen {
                tracing::info!(
                    task_id = %task.id,
                    model = %self.inner.spec.model,
                    fallback = %fallback.inner.spec.model,
                    "the model cannot take the call now; its fallback takes it"
                );
                let outcome = fallback.attempt(&task, &ctx).await;
                self.inner.spent.add(&outcome);
                return outcome;
            }
        }
        let outcome = self.attempt(&task, &ctx).await;
        self.inner.spent.add(&outcome);
        outcome
    }

    fn health(&self) -> Option<HealthFeed> {
        self.follow_account();
        Some(self.inner.health.subscribe())
    }

    fn status(&self) -> AgentStatus {
        AgentStatus {
            breaker: Some(breaker_status(&*self.inner.breaker)),
            limiter: Some(limiter_status(&self.inner.limiter)),
            account: self.inner.account.as_ref().map(|a| a.name().to_owned()),
            spent: Some(self.inner.spent.read()),
            remote: None,
        }
    }
}

/// Awaits `future`, beating the task's heartbeat every second meanwhile.
async fn with_heartbeats<F: Future>(ctx: &TaskContext, future: F) -> F::Output {
    tokio::pin!(future);
    loop {
        tokio::select! {
            output = &mut future => return output,
            () = tokio::time::sleep(Duration::from_secs(1)) => ctx.heartbeat(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_call_is_priced_at_its_models_price_else_at_the_answering_models() {
        let dated = Price {
            input: 1.0,
            cached_input: None,
            output: 2.0,
        };
        let mut spec = ModelSpec::new(Provider::Openai, "http://127.0.0.1:1/v1", "gpt-x");
        spec.prices = Arc::new(BTreeMap::from([("gpt-x-2025".to_owned(), dated)]));
        assert_eq!(price(&spec, None), None, "unpriced: unknown");
        assert_eq!(price(&spec, Some("gpt-x-2025")), Some(&dated));
        let own = Price {
            output: 3.0,
            ..dated
        };
        spec.prices = Arc::new(BTreeMap::from([
            ("gpt-x-2025".to_owned(), dated),
            ("gpt-x".to_owned(), own),
        ]));
        assert_eq!(price(&spec, Some("gpt-x-2025")), Some(&own));
        let completion = provider::Completion {
            text: "hi".into(),
            usage: Some(swarm_protocol::Usage {
                input_tokens: 10,
                output_tokens: 5,
                ..swarm_protocol::Usage::default()
            }),
            finish: None,
            model: Some("gpt-x-2025".into()),
        };
        // 10 × 1.0 + 5 × 3.0 micro-dollars.
        assert_eq!(
            finish(completion, false, &spec, &Span::none())
                .usage()
                .and_then(|u| u.cost_usd_micros),
            Some(25)
        );
    }
}
