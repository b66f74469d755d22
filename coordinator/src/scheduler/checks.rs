//! Planning checks: what a batch of tasks must pass, beyond graph validation, to join an
//! objective, and what a planner's plan must pass to become the objective's tasks.
//!
//! The checks read the registry (which capabilities exist) and, for a plan, the graph it
//! joins; they change nothing, so each is a function of its arguments. A submitted graph stops
//! at its first error (the caller fixes it and submits again); a plan collects every error,
//! since they all go back to the planner in one repair prompt.

use swarm_protocol::graph;
use swarm_protocol::task::{check_compensation_references, check_references};
use swarm_protocol::{Capability, SchedulerError, TaskId, TaskKey, TaskKind, TaskSpec, TaskStatus};
use swarm_registry::Registry;

use super::graph::{BatchExtras, Graph, ObjectiveTasks, TaskExtra};
use super::planner::PLAN_CAPABILITY;
use super::schema::OutputSchema;

/// A plan that passed every check.
pub(super) struct CheckedPlan {
    /// Its tasks as the planner declared them (as `TasksSpawned` records them).
    pub(super) specs: Vec<TaskSpec>,
    /// The same, each also depending on the planning task, as validated.
    pub(super) with_parent: Vec<TaskSpec>,
    /// The depth of each.
    pub(super) depths: Vec<u32>,
    /// Their compiled schemas and compensations.
    pub(super) extras: BatchExtras,
}

/// A planning task's declaration: capability `plan`, no input (it is built when the task
/// starts).
pub(super) fn planning_spec(key: &str) -> Option<TaskSpec> {
    let key = TaskKey::new(key).ok()?;
    let capability = Capability::new(PLAN_CAPABILITY).ok()?;
    Some(TaskSpec::new(key, capability))
}

/// Checks what graph validation cannot: capabilities, `$from` references, output schemas
/// and compensations. Returns each task's [`TaskExtra`] (schemas compiled here, once), or
/// an empty list when no task has one.
pub(super) fn check_tasks<H: Clone + Send + Sync + 'static>(
    registry: &Registry<H>,
    specs: &[TaskSpec],
) -> Result<BatchExtras, SchedulerError> {
    let mut known: Option<&Capability> = None;
    let mut extras = BatchExtras::new();
    for (i, spec) in specs.iter().enumerate() {
        if spec.kind == TaskKind::Agent && known != Some(&spec.capability) {
            if !registry.knows_capability(&spec.capability) {
                return Err(SchedulerError::UnknownCapability {
                    task: spec.id.clone(),
                    capability: spec.capability.clone(),
                });
            }
            known = Some(&spec.capability);
        }
        check_references(spec).map_err(|e| SchedulerError::BadInput {
            task: spec.id.clone(),
            reason: e.to_string(),
        })?;
        if spec.output_schema.is_none() && spec.compensation.is_none() {
            continue;
        }
        if let Some(compensation) = &spec.compensation {
            if !registry.knows_capability(&compensation.capability) {
                return Err(SchedulerError::BadCompensation {
                    task: spec.id.clone(),
                    field: "capability",
                    reason: format!(
                        "no registered agent has capability `{}`",
                        compensation.capability
                    ),
                });
            }
            check_compensation_references(spec).map_err(|e| SchedulerError::BadCompensation {
                task: spec.id.clone(),
                field: "input",
                reason: e.to_string(),
            })?;
        }
        let schema =
            match &spec.output_schema {
                Some(schema) => Some(OutputSchema::compile(schema).map_err(|reason| {
                    SchedulerError::BadSchema {
                        task: spec.id.clone(),
                        reason,
                    }
                })?),
                None => None,
            };
        if extras.is_empty() {
            extras.resize_with(specs.len(), || None);
        }
        extras[i] = Some(Box::new(TaskExtra {
            schema,
            compensation: spec.compensation.clone(),
            ..TaskExtra::default()
        }));
    }
    Ok(extras)
}

/// The extras of tasks accepted before a restart: they were checked then, so a schema that
/// no longer compiles (a newer validator) is dropped with a warning rather than losing the
/// objective.
pub(super) fn restored_extras(specs: &[TaskSpec]) -> BatchExtras {
    let mut extras = BatchExtras::new();
    for (i, spec) in specs.iter().enumerate() {
        if spec.output_schema.is_none() && spec.compensation.is_none() {
            continue;
        }
        let schema = spec.output_schema.as_ref().and_then(|schema| {
            OutputSchema::compile(schema)
                .map_err(|err| {
                    tracing::warn!(task = %spec.id, %err, "output_schema no longer compiles");
                })
                .ok()
        });
        if extras.is_empty() {
            extras.resize_with(specs.len(), || None);
        }
        extras[i] = Some(Box::new(TaskExtra {
            schema,
            compensation: spec.compensation.clone(),
            ..TaskExtra::default()
        }));
    }
    extras
}

/// Checks a plan as a submitted graph is checked (the graph first, then each task's
/// capability, `$from` references, and dependencies on tasks that failed or were
/// dropped), collecting every error.
pub(super) fn check_plan<H: Clone + Send + Sync + 'static>(
    graph: &Graph,
    registry: &Registry<H>,
    id: TaskId,
    specs: Vec<TaskSpec>,
) -> Result<CheckedPlan, Vec<String>> {
    let node = graph
        .tasks
        .get(id)
        .ok_or_else(|| vec!["the task is gone".to_owned()])?;
    let run = graph
        .objectives
        .get(&node.objective)
        .ok_or_else(|| vec!["the objective is gone".to_owned()])?;
    let replan = node.record.planning.as_ref().map_or(0, |p| p.replan);
    let mut errors = Vec::new();
    if specs.is_empty() && replan == 0 {
        errors.push("the plan has no tasks: list at least one in `tasks`".to_owned());
    }
    let mut known: Option<&Capability> = None;
    for (i, spec) in specs.iter().enumerate() {
        if spec.capability.as_str() == PLAN_CAPABILITY {
            errors.push(format!(
                "tasks[{i}] (`{}`): capability `{PLAN_CAPABILITY}` is the planner's own; \
                 use one of the capabilities listed",
                spec.id
            ));
        } else if known != Some(&spec.capability) {
            if registry.knows_capability(&spec.capability) {
                known = Some(&spec.capability);
            } else {
                let err = SchedulerError::UnknownCapability {
                    task: spec.id.clone(),
                    capability: spec.capability.clone(),
                };
                errors.push(err.to_string());
            }
        }
        // Against the plan's own dependencies: the planning task's output is no input.
        let references = if spec.depends_on.contains(&node.record.key) {
            let mut own = spec.clone();
            own.depends_on.retain(|d| *d != node.record.key);
            check_references(&own)
        } else {
            check_references(spec)
        };
        if let Err(err) = references {
            errors.push(format!("task `{}`: {err}", spec.id));
        }
        for dep in &spec.depends_on {
            // (Naming the planning task itself only repeats the implicit edge.)
            let existing = run.keys.get(dep).filter(|t| **t != id);
            let Some(existing) = existing.and_then(|t| graph.tasks.get(*t)) else {
                continue;
            };
            let why = match existing.record.status {
                _ if existing.record.planning.is_some() => {
                    "is a planning task (its plan is no input)"
                }
                TaskStatus::Failed => "failed and will never succeed",
                TaskStatus::Cancelled => "was dropped and will never run",
                _ => continue,
            };
            errors.push(format!(
                "task `{}` depends on `{dep}`, which {why}",
                spec.id
            ));
        }
    }
    let with_parent = graph.with_parent(id, &specs);
    let existing = ObjectiveTasks {
        run,
        tasks: &graph.tasks,
    };
    match graph::validate(&with_parent, &existing, &run.limits) {
        // Schemas and compensations last: the plan is otherwise sound.
        Ok(depths) if errors.is_empty() => match check_tasks(registry, &with_parent) {
            Ok(extras) => Ok(CheckedPlan {
                specs,
                with_parent,
                depths,
                extras,
            }),
            Err(err) => Err(vec![err.to_string()]),
        },
        Ok(_) => Err(errors),
        Err(err) => {
            errors.insert(0, err.to_string());
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests;
