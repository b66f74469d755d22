//! Membership: the announcements, heartbeats and leaves of remote agents, and the losses
//! that keep a failing agent name down.

use super::*;

pub(super) async fn answer_announcements(
    shared: Arc<Shared>,
    mut requests: async_nats::Subscriber,
) {
    while let Some(message) = requests.next().await {
        let to = reply_to(&message);
        let reply = match remote::read_announce(&message.payload) {
            Ok(announce) => accept(&shared, announce).await,
            Err(refused) => AnnounceReply::refused(&refused),
        };
        answer(&shared.client, to, &reply).await;
    }
}

/// Registers an announced agent (replacing an older session of the same name) and creates the
/// consumer its worker pulls from.
pub(super) async fn accept(shared: &Arc<Shared>, announce: Announce) -> AnnounceReply {
    let link = &shared.link;
    // The same agent announced again under the same session (its answer was lost): the same
    // answer. Another session under its name: the worker restarted, and the old agent goes.
    let existing: Vec<(AgentId, bool)> = shared
        .agents
        .iter()
        .filter(|r| r.name == announce.name)
        .map(|r| (*r.key(), r.session == announce.session))
        .collect();
    for (id, same) in existing {
        if same {
            return accepted(link, id);
        }
        lose(
            shared,
            id,
            "its worker restarted (a new session announced it)",
        )
        .await;
    }
    if let Some(refusal) = too_many_losses(shared, &announce.name) {
        return AnnounceReply::refused(&refusal);
    }
    let (health, _) = watch::channel(HealthReport {
        health: Health::Up,
        reason: String::new(),
    });
    let (id_tx, id_rx) = watch::channel(None);
    let last_heartbeat_ms = Arc::new(AtomicU64::new(link.now_ms()));
    let plugin = RemoteAgent {
        link: link.clone(),
        id: id_rx,
        health: health.subscribe(),
        host: announce.host.clone(),
        session: announce.session.clone(),
        last_heartbeat_ms: last_heartbeat_ms.clone(),
    };
    let registration = Registration {
        name: announce.name.clone(),
        capabilities: announce.capabilities.clone(),
        max_concurrency: announce.max_concurrency,
        labels: announce.labels.clone(),
        cost_hint: announce.cost_hint,
        description: announce.description.clone(),
    };
    let Some(swarm) = shared.swarm.upgrade() else {
        return AnnounceReply::refused(&"the coordinator is shutting down");
    };
    let descriptor = match swarm
        .register_agent(registration, AgentFactory::shared(plugin))
        .await
    {
        Ok(descriptor) => descriptor,
        Err(err) => return AnnounceReply::refused(&err),
    };
    drop(swarm);
    let id = descriptor.id;
    let created = async {
        let stream = link
            .js
            .get_stream(link.subjects.attempts_stream())
            .await
            .map_err(|e| e.to_string())?;
        let name = link.subjects.attempts_consumer(id);
        let _ = stream.delete_consumer(&name).await;
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(name),
                filter_subject: link.subjects.attempts(id),
                ack_policy: consumer::AckPolicy::Explicit,
                // Twice the lease: the coordinator decides that a lease is lost (and deletes
                // the attempt's message) before JetStream would deliver it again, so a
                // redelivery happens only while the coordinator cannot act.
                ack_wait: link.options.lease * 2,
                max_ack_pending: i64::from(announce.max_concurrency),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())
    }
    .await;
    if let Err(err) = created {
        if let Some(swarm) = shared.swarm.upgrade() {
            let _ = swarm.deregister_agent(id).await;
        }
        return AnnounceReply::refused(&format!(
            "the coordinator could not create the agent's consumer: {err}"
        ));
    }
    shared.agents.insert(
        id,
        Remote {
            name: announce.name.clone(),
            session: announce.session.clone(),
            last_heartbeat_ms,
            health,
        },
    );
    let _ = id_tx.send(Some(id));
    tracing::info!(agent = %id, name = %announce.name, host = %announce.host, "remote agent joined");
    accepted(link, id)
}

pub(super) fn accepted(link: &Link, agent: AgentId) -> AnnounceReply {
    AnnounceReply::Accepted {
        agent,
        protocol_version: PROTOCOL_VERSION,
        heartbeat_interval_ms: millis(link.options.heartbeat_interval),
        lease_ms: millis(link.options.lease),
        attempts_subject: link.subjects.attempts(agent),
        attempts_consumer: link.subjects.attempts_consumer(agent),
    }
}

/// Removes an agent that was lost (its worker died or restarted without leaving) and counts
/// the loss against its name.
pub(super) async fn lose(shared: &Arc<Shared>, id: AgentId, why: &str) {
    let Some(name) = shared.agents.get(&id).map(|r| r.name.clone()) else {
        return;
    };
    let mut times = shared.losses.entry(name).or_default();
    times.push_back(Instant::now());
    let keep = shared.link.options.max_losses as usize + 1;
    while times.len() > keep {
        times.pop_front();
    }
    drop(times);
    forget(shared, id, why).await;
}

/// The refusal of an agent name lost more than `max_losses` times within `loss_window`.
pub(super) fn too_many_losses(shared: &Shared, name: &str) -> Option<String> {
    let options = &shared.link.options;
    let times = shared.losses.get(name)?;
    let recent: Vec<&Instant> = times
        .iter()
        .filter(|t| t.elapsed() < options.loss_window)
        .collect();
    if recent.len() <= options.max_losses as usize {
        return None;
    }
    let free_in = options
        .loss_window
        .saturating_sub(recent.first().map_or(Duration::ZERO, |t| t.elapsed()));
    Some(format!(
        "agent `{name}` was lost {} times within {:?} (its worker stopped heartbeating or \
         restarted without leaving): it stays down, as a local agent past its restart budget \
         does; announcements of it are refused for another {}s",
        recent.len(),
        options.loss_window,
        free_in.as_secs().max(1)
    ))
}

/// Removes a remote agent from the registry (what it ran is re-queued) and from the host.
pub(super) async fn forget(shared: &Arc<Shared>, id: AgentId, why: &str) {
    if shared.agents.remove(&id).is_none() {
        return;
    }
    tracing::warn!(agent = %id, "remote agent removed: {why}");
    if let Some(swarm) = shared.swarm.upgrade() {
        let _ = swarm.deregister_agent(id).await;
    }
    delete_consumer(&shared.link, id).await;
}

pub(super) async fn delete_consumer(link: &Link, id: AgentId) {
    if let Ok(stream) = link.js.get_stream(link.subjects.attempts_stream()).await {
        let _ = stream
            .delete_consumer(&link.subjects.attempts_consumer(id))
            .await;
    }
}

pub(super) async fn answer_heartbeats(shared: Arc<Shared>, mut requests: async_nats::Subscriber) {
    while let Some(message) = requests.next().await {
        let to = reply_to(&message);
        let reply = match remote::decode::<Heartbeat>(&message.payload) {
            Ok(beat) => heartbeat(&shared, &beat).await,
            // Nothing to answer about: a worker that cannot form a heartbeat announces again.
            Err(err) => {
                tracing::debug!(%err, "a heartbeat was not readable");
                HeartbeatReply::Announce
            }
        };
        answer(&shared.client, to, &reply).await;
    }
}

pub(super) async fn heartbeat(shared: &Arc<Shared>, beat: &Heartbeat) -> HeartbeatReply {
    let known = shared
        .agents
        .get(&beat.agent)
        .filter(|r| r.session == beat.session)
        .map(|r| {
            r.last_heartbeat_ms
                .store(shared.link.now_ms(), Ordering::Relaxed);
            let report = HealthReport {
                health: beat.health,
                reason: beat.reason.clone().unwrap_or_default(),
            };
            r.health.send_if_modified(|now| {
                let changed = *now != report;
                *now = report;
                changed
            });
        })
        .is_some();
    if !known {
        return HeartbeatReply::Announce;
    }
    let Some(swarm) = shared.swarm.upgrade() else {
        return HeartbeatReply::Continue;
    };
    match swarm.registry().snapshot(beat.agent) {
        // The whole coordinator drains to stop: the worker carries on and meets the next one.
        Some(_) if shared.stopping.load(Ordering::SeqCst) => HeartbeatReply::Continue,
        Some(snapshot) if snapshot.health == Health::Draining => HeartbeatReply::Drain {
            reason: "the agent is being removed from the swarm".into(),
        },
        Some(_) => HeartbeatReply::Continue,
        // Removed by an operator (`DELETE /v1/agents/{id}`) and its drain is over.
        None => {
            shared.agents.remove(&beat.agent);
            delete_consumer(&shared.link, beat.agent).await;
            HeartbeatReply::Drain {
                reason: "the agent was removed from the swarm".into(),
            }
        }
    }
}

pub(super) async fn take_leaves(shared: Arc<Shared>, mut messages: async_nats::Subscriber) {
    while let Some(message) = messages.next().await {
        let Ok(leave) = remote::decode::<Leave>(&message.payload) else {
            continue;
        };
        let known = shared
            .agents
            .get(&leave.agent)
            .is_some_and(|r| r.session == leave.session);
        if !known {
            continue;
        }
        match leave.mode {
            LeaveMode::Drain => {
                tracing::info!(agent = %leave.agent, "remote agent drains and leaves");
                if let Some(swarm) = shared.swarm.upgrade() {
                    let _ = swarm
                        .remove_agent(leave.agent, shared.link.options.drain_grace)
                        .await;
                }
            }
            LeaveMode::Now => forget(&shared, leave.agent, "its worker left").await,
        }
    }
}
