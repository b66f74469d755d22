//! Planning checks on plain values: a registry whose agents' handles are numbers, and a graph
//! without a scheduler around it.

use serde_json::json;
use swarm_protocol::task::Compensation;
use swarm_protocol::{Limits, ObjectiveId};
use swarm_registry::Registration;

use super::*;
use crate::scheduler::graph::ObjectiveRun;

fn capability(name: &str) -> Capability {
    Capability::new(name).expect("a valid capability")
}

fn key(name: &str) -> TaskKey {
    TaskKey::new(name).expect("a valid key")
}

fn spec(name: &str, cap: &str, after: &[&str]) -> TaskSpec {
    TaskSpec::new(key(name), capability(cap)).after(after.iter().map(|d| key(d)))
}

/// A registry with one agent, of capabilities `code` and `plan`.
fn registry() -> Registry<u32> {
    let registry = Registry::new();
    let caps = vec![capability("code"), capability(PLAN_CAPABILITY)];
    registry
        .register(Registration::new("agent", caps, 1), 0)
        .expect("a valid registration");
    registry
}

#[test]
fn a_batch_without_schemas_or_compensations_has_no_extras() {
    let specs = [spec("a", "code", &[]), spec("b", "code", &["a"])];
    let extras = check_tasks(&registry(), &specs).expect("a valid batch");
    assert!(extras.is_empty(), "nothing allocated for the common case");
}

#[test]
fn a_batch_is_refused_at_its_first_error() {
    let registry = registry();
    let unknown = [spec("a", "code", &[]), spec("b", "paint", &[])];
    assert!(matches!(
        check_tasks(&registry, &unknown),
        Err(SchedulerError::UnknownCapability { task, .. }) if task == key("b")
    ));
    let mut bad_schema = spec("a", "code", &[]);
    bad_schema.output_schema = Some(json!({"type": 5}));
    assert!(matches!(
        check_tasks(&registry, &[bad_schema]),
        Err(SchedulerError::BadSchema { .. })
    ));
    let mut undo = spec("a", "code", &[]);
    undo.compensation = Some(Compensation::new(capability("paint"), json!(null)));
    assert!(matches!(
        check_tasks(&registry, &[undo]),
        Err(SchedulerError::BadCompensation {
            field: "capability",
            ..
        })
    ));
}

#[test]
fn a_schema_is_compiled_once_into_its_task_s_extra() {
    let mut checked = spec("b", "code", &[]);
    checked.output_schema = Some(json!({"type": "object"}));
    let specs = [spec("a", "code", &[]), checked];
    let extras = check_tasks(&registry(), &specs).expect("a valid batch");
    assert_eq!(extras.len(), 2);
    assert!(extras[0].is_none());
    assert!(extras[1].as_ref().is_some_and(|e| e.schema.is_some()));
    // After a restart a schema that no longer compiles is dropped, not the task.
    let mut stale = spec("c", "code", &[]);
    stale.output_schema = Some(json!({"type": 5}));
    let restored = restored_extras(&[stale]);
    assert!(restored[0].as_ref().is_some_and(|e| e.schema.is_none()));
}

/// A graph whose objective has a planning task and a task that failed; returns the graph and
/// the planning task.
fn planned() -> (Graph, TaskId) {
    let mut graph = Graph::default();
    let objective = ObjectiveId::new();
    let mut run = ObjectiveRun::new("goal".into(), 0, Limits::default(), 2);
    let plan = planning_spec("plan").expect("a valid planning task");
    let specs = [plan, spec("broken", "code", &[])];
    let ids = graph.add_tasks(objective, &mut run, &specs, &[1, 1], None, Vec::new());
    graph.objectives.insert(objective, run);
    if let Some(node) = graph.tasks.get_mut(ids[0]) {
        node.record.planning = Some(Box::default());
    }
    if let Some(node) = graph.tasks.get_mut(ids[1]) {
        node.record.status = TaskStatus::Failed;
    }
    (graph, ids[0])
}

#[test]
fn a_sound_plan_depends_on_its_planning_task() {
    let (graph, plan) = planned();
    let specs = vec![spec("x", "code", &[]), spec("y", "code", &["x"])];
    let checked = check_plan(&graph, &registry(), plan, specs).expect("a sound plan");
    assert_eq!(checked.specs.len(), 2);
    assert_eq!(checked.with_parent[0].depends_on, vec![key("plan")]);
    assert_eq!(checked.depths.len(), 2);
}

#[test]
fn a_plan_collects_every_error() {
    let (graph, plan) = planned();
    let specs = vec![
        spec("again", PLAN_CAPABILITY, &[]),
        spec("paint", "paint", &[]),
        spec("after", "code", &["broken"]),
    ];
    let errors = check_plan(&graph, &registry(), plan, specs).err();
    let errors = errors.expect("an unsound plan");
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].contains("the planner's own"));
    assert!(errors[1].contains("paint"));
    assert!(errors[2].contains("failed and will never succeed"));
    let empty = check_plan(&graph, &registry(), plan, Vec::new()).err();
    assert!(empty.is_some_and(|e| e[0].contains("no tasks")));
}
