//! The one actor that runs every kind of agent.
//!
//! `AgentActor` receives batches of attempts from the scheduler. It polls each attempt once
//! inside the handler: an agent that answers at once (a no-op, a cache hit) costs no task spawn
//! and its report joins the batch's single reply. An attempt that is not done is moved to a
//! tokio task of its own, watched by the idle and hard timeouts, so the mailbox never waits on
//! model calls. When that task ends it sends `AttemptEnded` back here; the actor frees the slot
//! and then forwards the report, so the scheduler never sees a free slot before the actor does.
//!
//! A panic in a plug-in fails this actor (its supervisor restarts it and the scheduler re-queues
//! every attempt that was in flight here). Attempts still running when the actor dies are
//! aborted, so a crashed agent leaves nothing behind that could report twice.
//!
//! `Drain` asks to be told when nothing runs here any more; it is answered right after the last
//! running attempt's report went to the scheduler, so a supervisor that stops the actor then
//! loses no outcome.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use swarm_protocol::{
    AgentId, AgentMsg, Assignment, AttemptPanic, FailureKind, Report, TaskId, TaskOutcome,
};
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::agent::{AgentFuture, DynAgent};
use crate::context::TaskContext;
use crate::sink::ReportSink;
use crate::trace;

/// Runs one agent's attempts. Behaviour only; state lives in [`AgentState`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AgentActor;

/// What an agent actor starts with.
#[derive(Clone)]
pub struct AgentArgs {
    /// The agent's registry id.
    pub id: AgentId,
    /// The agent's name (`gen_ai.agent.name` on its attempts' spans).
    pub name: Arc<str>,
    /// The plug-in instance this actor runs. Its supervisor makes it (with
    /// [`crate::AgentFactory::make`], once per start) and keeps a handle on it, so operators can
    /// read the live instance's status.
    pub agent: Arc<dyn DynAgent>,
    /// Where outcomes go.
    pub reports: ReportSink,
    /// The most attempts run at once.
    pub max_concurrency: u32,
}

impl std::fmt::Debug for AgentArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentArgs")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("max_concurrency", &self.max_concurrency)
            .finish_non_exhaustive()
    }
}

/// An agent actor's state.
pub struct AgentState {
    id: AgentId,
    name: Arc<str>,
    agent: Arc<dyn DynAgent>,
    reports: ReportSink,
    max_concurrency: usize,
    running: Running,
    /// Who waits for `running` to be empty (`AgentMsg::Drain`).
    drains: Vec<RpcReplyPort<()>>,
}

/// Attempts running off the mailbox. Dropping it (the actor stopped or died) aborts them.
#[derive(Default)]
struct Running(HashMap<(TaskId, u32), AbortHandle>);

impl Drop for Running {
    fn drop(&mut self) {
        for handle in self.0.values() {
            handle.abort();
        }
    }
}

/// What became of an attempt after its first poll.
enum Started {
    Done(Report),
    Spawned,
    Panicked(AttemptPanic),
}

impl Actor for AgentActor {
    type Msg = AgentMsg;
    type State = AgentState;
    type Arguments = AgentArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<AgentMsg>,
        args: AgentArgs,
    ) -> Result<AgentState, ActorProcessingErr> {
        Ok(AgentState {
            id: args.id,
            name: args.name,
            agent: args.agent,
            reports: args.reports,
            max_concurrency: args.max_concurrency.max(1) as usize,
            running: Running::default(),
            drains: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AgentMsg>,
        message: AgentMsg,
        state: &mut AgentState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AgentMsg::Run(batch) => state.run_batch(batch, &myself),
            AgentMsg::Cancel { task, attempt } => {
                state.cancel(task, attempt);
                state.answer_drains_if_idle();
                Ok(())
            }
            AgentMsg::AttemptEnded(result) => {
                state.attempt_ended(result)?;
                state.answer_drains_if_idle();
                Ok(())
            }
            AgentMsg::Drain(reply) => {
                state.drains.push(reply);
                state.answer_drains_if_idle();
                Ok(())
            }
            AgentMsg::InFlight(reply) => {
                // The asker may have given up waiting; nothing to do then.
                let _ = reply.send(state.running.0.len());
                Ok(())
            }
        }
    }
}

impl AgentState {
    fn run_batch(
        &mut self,
        batch: Vec<Assignment>,
        myself: &ActorRef<AgentMsg>,
    ) -> Result<(), ActorProcessingErr> {
        let mut reports = Vec::with_capacity(batch.len());
        let mut panic = None;
        for assignment in batch {
            match self.start(assignment, myself) {
                Started::Done(report) => reports.push(report),
                Started::Spawned => {}
                Started::Panicked(p) => {
                    panic = Some(p);
                    break;
                }
            }
        }
        self.report(reports);
        match panic {
            // The rest of the batch was never started; the scheduler re-queues it with the
            // attempts that were in flight when it hears this agent was lost.
            Some(p) => Err(panic_error(self.id, &p)),
            None => Ok(()),
        }
    }

    fn start(&mut self, assignment: Assignment, myself: &ActorRef<AgentMsg>) -> Started {
        let Assignment {
            task,
            ready_at,
            parent_span,
        } = assignment;
        let (task_id, attempt) = (task.id, task.attempt);
        if self.running.0.len() >= self.max_concurrency {
            // The registry never hands out more slots than the capacity, so this only guards
            // against a descriptor and an actor that disagree.
            return Started::Done(Report {
                task: task_id,
                attempt,
                outcome: TaskOutcome::failure(
                    FailureKind::Transient,
                    format!("agent {} is at its concurrency limit", self.id),
                ),
                duration: Duration::ZERO,
            });
        }
        let (idle, hard) = (task.idle_timeout, task.hard_timeout);
        let ctx = TaskContext::new(ready_at);
        // Only when traces are exported (the scheduler sent the objective's span) is the
        // attempt given a span of its own and wrapped in it.
        let span = parent_span
            .map(|parent| trace::agent_span(&parent, self.id, &self.name, &task))
            .filter(|span| !span.is_disabled());
        let mut attempt_future = self.agent.clone().start(task, ctx.clone());
        if let Some(span) = &span {
            attempt_future = Box::pin(attempt_future.instrument(span.clone()));
        }
        let mut cx = Context::from_waker(Waker::noop());
        let first_poll =
            std::panic::catch_unwind(AssertUnwindSafe(|| attempt_future.as_mut().poll(&mut cx)));
        match first_poll {
            Ok(Poll::Ready(outcome)) => {
                if let Some(span) = &span {
                    trace::record_outcome(span, &outcome);
                }
                Started::Done(Report {
                    task: task_id,
                    attempt,
                    outcome: outcome.bounded(),
                    duration: ctx.started().elapsed(),
                })
            }
            Ok(Poll::Pending) => {
                let runner = run_attempt(
                    attempt_future,
                    span,
                    ctx,
                    idle,
                    hard,
                    myself.clone(),
                    (task_id, attempt),
                );
                let handle = tokio::spawn(runner);
                self.running
                    .0
                    .insert((task_id, attempt), handle.abort_handle());
                Started::Spawned
            }
            Err(payload) => Started::Panicked(AttemptPanic {
                task: task_id,
                attempt,
                message: panic_text(payload.as_ref()),
            }),
        }
    }

    fn cancel(&mut self, task: TaskId, attempt: u32) {
        if let Some(handle) = self.running.0.remove(&(task, attempt)) {
            handle.abort();
        }
    }

    fn attempt_ended(
        &mut self,
        result: Result<Report, AttemptPanic>,
    ) -> Result<(), ActorProcessingErr> {
        match result {
            Ok(report) => {
                // An attempt cancelled in the meantime has no slot any more and its outcome is
                // no longer wanted.
                if self
                    .running
                    .0
                    .remove(&(report.task, report.attempt))
                    .is_some()
                {
                    self.report(vec![report]);
                }
                Ok(())
            }
            Err(p) => {
                self.running.0.remove(&(p.task, p.attempt));
                Err(panic_error(self.id, &p))
            }
        }
    }

    /// Tells whoever waits for this agent to be idle, once it is. Reports go out before (each
    /// attempt's report is sent when it ends), so the answer follows every outcome.
    fn answer_drains_if_idle(&mut self) {
        if self.running.0.is_empty() {
            for reply in self.drains.drain(..) {
                // A supervisor that gave up waiting (its grace elapsed) needs no answer.
                let _ = reply.send(());
            }
        }
    }

    fn report(&self, reports: Vec<Report>) {
        if reports.is_empty() {
            return;
        }
        if !self.reports.send(self.id, reports) {
            // The scheduler is gone: the coordinator is shutting down, and whatever it had not
            // recorded is recovered from the log on the next start.
            tracing::debug!(agent_id = %self.id, "scheduler gone; report dropped");
        }
    }
}

fn panic_error(agent: AgentId, p: &AttemptPanic) -> ActorProcessingErr {
    format!(
        "agent {agent} panicked running {} attempt {}: {}",
        p.task, p.attempt, p.message
    )
    .into()
}

fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-text panic payload".to_owned()
    }
}

/// Runs an attempt that did not finish on its first poll, then hands its end to the actor.
async fn run_attempt(
    attempt_future: AgentFuture,
    span: Option<tracing::Span>,
    ctx: TaskContext,
    idle: Option<Duration>,
    hard: Option<Duration>,
    actor: ActorRef<AgentMsg>,
    (task, attempt): (TaskId, u32),
) {
    let watched = watch(attempt_future, &ctx, idle, hard);
    let result = match AssertUnwindSafe(watched).catch_unwind().await {
        Ok(outcome) => {
            if let Some(span) = &span {
                trace::record_outcome(span, &outcome);
            }
            Ok(Report {
                task,
                attempt,
                outcome: outcome.bounded(),
                duration: ctx.started().elapsed(),
            })
        }
        Err(payload) => {
            if let Some(span) = &span {
                trace::record_error(span, "panic");
            }
            Err(AttemptPanic {
                task,
                attempt,
                message: panic_text(payload.as_ref()),
            })
        }
    };
    // The attempt's span ends with its report, not when the actor hears of it.
    drop(span);
    // If the actor is gone, its supervisor has already handed this attempt back to the scheduler.
    let _ = actor.cast(AgentMsg::AttemptEnded(result));
}

/// Drives an attempt under its idle timeout (no heartbeat or partial output for that long) and
/// its hard timeout (total run time). Either cancels the attempt, keeping its partial output.
/// The agent actor runs every attempt under it, and a remote worker (`swarm-remote`) too.
pub async fn watch(
    attempt_future: impl Future<Output = TaskOutcome>,
    ctx: &TaskContext,
    idle: Option<Duration>,
    hard: Option<Duration>,
) -> TaskOutcome {
    // Checked: a timeout too long for an `Instant` to hold is a deadline that never comes.
    let hard_deadline = hard.and_then(|h| ctx.started().checked_add(h));
    tokio::pin!(attempt_future);
    loop {
        let idle_deadline = idle.and_then(|i| ctx.last_beat().checked_add(i));
        let wake = match (hard_deadline, idle_deadline) {
            (Some(h), Some(i)) => h.min(i),
            (Some(at), None) | (None, Some(at)) => at,
            (None, None) => return attempt_future.await,
        };
        tokio::select! {
            biased;
            outcome = &mut attempt_future => return outcome,
            () = tokio::time::sleep_until(wake) => {
                let now = tokio::time::Instant::now();
                if let (Some(deadline), Some(h)) = (hard_deadline, hard)
                    && now >= deadline
                {
                    return timed_out(ctx, format!("ran past its hard timeout of {h:?}"));
                }
                if let Some(i) = idle
                    && ctx.last_beat().checked_add(i).is_some_and(|at| now >= at)
                {
                    return timed_out(ctx, format!("stalled: no progress for {i:?} (idle timeout)"));
                }
                // Progress arrived while we slept; wait again from the latest heartbeat.
            }
        }
    }
}

fn timed_out(ctx: &TaskContext, message: String) -> TaskOutcome {
    TaskOutcome::Failed {
        kind: FailureKind::Timeout,
        message,
        partial_output: ctx.partial(),
        usage: None,
        retry_after: None,
    }
}

#[cfg(test)]
mod tests;
