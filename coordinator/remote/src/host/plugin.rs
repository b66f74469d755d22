//! The plug-in a remote agent is registered with: its `run` publishes the attempt to the
//! agent's JetStream subject and waits for the result, the lease and the hard timeout; a run
//! that ends without a result takes the attempt's message out of the stream.

use super::*;

/// The plug-in of a remote agent: publishes each attempt to the agent's subject and waits
/// for its result.
#[derive(Clone)]
pub(super) struct RemoteAgent {
    pub(super) link: Arc<Link>,
    pub(super) id: watch::Receiver<Option<AgentId>>,
    pub(super) health: HealthFeed,
    pub(super) host: String,
    pub(super) session: String,
    pub(super) last_heartbeat_ms: Arc<AtomicU64>,
}

impl Agent for RemoteAgent {
    async fn run(&self, task: Task, ctx: TaskContext) -> TaskOutcome {
        let mut id = self.id.clone();
        let agent = match id.wait_for(Option::is_some).await {
            Ok(agent) => agent.unwrap_or_default(),
            Err(_) => return declined("the remote agent is gone"),
        };
        let trace = swarm_agents::trace::context_of(&tracing::Span::current()).map(|c| {
            remote::TraceContext {
                traceparent: c.traceparent,
                tracestate: c.tracestate,
            }
        });
        let attempt = Attempt::new(&task, agent, trace);
        let payload = match remote::encode(&attempt) {
            Ok(payload) => payload,
            Err(err) => {
                return TaskOutcome::failure(
                    FailureKind::Permanent,
                    format!("the attempt cannot be sent to a remote agent: {err}"),
                );
            }
        };
        let key = (task.id, task.attempt);
        let (tx, mut rx) = oneshot::channel();
        self.link.waiting.insert(
            key,
            Waiter {
                agent,
                ctx: ctx.clone(),
                text_len: 0,
                started: false,
                result: Some(tx),
            },
        );
        let mut guard = Pending {
            link: self.link.clone(),
            key,
            sequence: None,
            answered: false,
        };
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", attempt.idempotency_key.as_str());
        let published = async {
            self.link
                .js
                .publish_with_headers(self.link.subjects.attempts(agent), headers, payload.into())
                .await?
                .await
        }
        .await;
        match published {
            Ok(ack) => guard.sequence = Some(ack.sequence),
            Err(err) => {
                return declined(&format!(
                    "the attempt could not be published to NATS: {err}"
                ));
            }
        }
        self.link.counters.attempts.fetch_add(1, Ordering::Relaxed);
        let lease = self.link.options.lease;
        loop {
            let deadline = ctx.last_beat().max(self.link.fresh_since()) + lease;
            tokio::select! {
                result = &mut rx => {
                    guard.answered = true;
                    return match result {
                        Ok(result) => result.outcome.into(),
                        Err(_) => declined("the coordinator's side of NATS stopped"),
                    };
                }
                () = tokio::time::sleep_until(deadline) => {
                    if !self.link.connected.load(Ordering::Relaxed)
                        || ctx.last_beat().max(self.link.fresh_since()) + lease > Instant::now()
                    {
                        continue;
                    }
                    self.link.counters.leases_lost.fetch_add(1, Ordering::Relaxed);
                    return TaskOutcome::Failed {
                        kind: FailureKind::Timeout,
                        message: format!(
                            "lease lost: the worker on {} sent no progress for {lease:?}",
                            self.host
                        ),
                        partial_output: ctx.partial(),
                        usage: None,
                        retry_after: None,
                    };
                }
            }
        }
    }

    fn health(&self) -> Option<HealthFeed> {
        Some(self.health.clone())
    }

    fn status(&self) -> AgentStatus {
        let ms = self.last_heartbeat_ms.load(Ordering::Relaxed);
        let ago = self.link.now_ms().saturating_sub(ms);
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| millis(d).saturating_sub(ago));
        AgentStatus {
            remote: Some(RemoteAgentStatus {
                host: self.host.clone(),
                session: self.session.clone(),
                last_heartbeat_unix_ms: unix_ms,
            }),
            ..AgentStatus::default()
        }
    }
}

fn declined(message: &str) -> TaskOutcome {
    TaskOutcome::failure(FailureKind::Declined, message)
}

/// An attempt waited for: when its run ends without a result (a timeout, a cancel, a lost
/// lease, the agent removed), it is no longer waited for, and its message leaves the stream
/// so that no worker starts it later.
struct Pending {
    link: Arc<Link>,
    key: (TaskId, u32),
    sequence: Option<u64>,
    answered: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.link.waiting.remove(&self.key);
        if self.answered {
            return;
        }
        let Some(sequence) = self.sequence else {
            return;
        };
        let link = self.link.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Ok(stream) = link.js.get_stream(link.subjects.attempts_stream()).await {
                    let _ = stream.delete_message(sequence).await;
                }
            });
        }
    }
}
