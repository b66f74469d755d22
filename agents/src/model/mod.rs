//! Model agents: an [`LlmAgent`] calls a model API (OpenAI-compatible chat completions or
//! Anthropic Messages, streaming or not) behind its own circuit breaker and rate limiter.
//!
//! One attempt goes: render the task into a prompt; wait for the breaker to admit a call
//! (while it is open the agent is reported down, so the scheduler sends work to other agents
//! with the capability; an attempt that reaches it anyway is declined, and goes back to the
//! queue without using up its retries; while a half-open probe is in flight, it waits); wait for the rate limiter (requests and estimated tokens per minute, and any pause a
//! server asked for); send the request with the attempt's idempotency key; stream the answer
//! into the task's partial output under the task's idle and hard timeouts; record the result
//! with the breaker and the limiter; and classify it:
//! - 2xx: success (usage recorded); asked for JSON and got something else: invalid output,
//!   which goes to review;
//! - 408, 429, 5xx (529 included), connection errors, a stream cut short: transient, retried
//!   with backoff no sooner than the server's `Retry-After`; they count against the breaker;
//! - timeouts: `Timeout` (the partial output streamed so far is kept); they count too;
//! - other 4xx: permanent, with the provider's message; 401, 403 and 404 mean the agent itself
//!   is misconfigured (key, model), so it also reports itself down and the task fails over to
//!   another agent with the capability, if there is one.

pub mod breaker;
pub mod limiter;
#[cfg(feature = "model")]
mod llm;
pub mod provider;

#[cfg(feature = "model")]
pub use llm::{ApiKey, LlmAgent, ModelSpec, render};
