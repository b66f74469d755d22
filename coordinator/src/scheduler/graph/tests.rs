//! [`Graph`] on plain values: batches of tasks, their edges, their inputs and pages of them.

use serde_json::json;
use swarm_protocol::Capability;

use super::*;

fn key(name: &str) -> TaskKey {
    TaskKey::new(name).expect("a valid key")
}

fn spec(name: &str, after: &[&str]) -> TaskSpec {
    let capability = Capability::new("code").expect("a valid capability");
    TaskSpec::new(key(name), capability).after(after.iter().map(|d| key(d)))
}

/// Adds an objective whose tasks are `specs`, one batch; returns it and its task ids.
fn objective(graph: &mut Graph, specs: &[TaskSpec]) -> (ObjectiveId, Vec<TaskId>) {
    let id = ObjectiveId::new();
    let mut run = ObjectiveRun::new("goal".into(), 0, Limits::default(), specs.len());
    let depths = vec![1; specs.len()];
    let ids = graph.add_tasks(id, &mut run, specs, &depths, None, BatchExtras::new());
    graph.objectives.insert(id, run);
    (id, ids)
}

fn node(graph: &Graph, id: TaskId) -> &TaskNode {
    graph.tasks.get(id).expect("a task of the graph")
}

#[test]
fn a_batch_gets_consecutive_ids_and_edges_both_ways() {
    let mut graph = Graph::default();
    // `b` names `c`, which comes later in the same batch.
    let specs = [spec("a", &[]), spec("b", &["a", "c"]), spec("c", &[])];
    let (objective, ids) = objective(&mut graph, &specs);
    assert_eq!(ids, vec![TaskId(1), TaskId(2), TaskId(3)]);
    assert_eq!(graph.next_task, 4);
    let b = node(&graph, TaskId(2));
    assert_eq!(b.waiting_on, 2);
    assert_eq!(b.record.deps, vec![TaskId(1), TaskId(3)]);
    assert_eq!(node(&graph, TaskId(1)).dependents, vec![TaskId(2)]);
    assert_eq!(node(&graph, TaskId(3)).dependents, vec![TaskId(2)]);
    let run = &graph.objectives[&objective];
    assert_eq!(run.unfinished, 3);
    assert_eq!(run.keys.get(&key("c")), Some(&TaskId(3)));
}

#[test]
fn a_later_batch_waits_only_on_dependencies_not_yet_succeeded() {
    let mut graph = Graph::default();
    let (objective, ids) = objective(&mut graph, &[spec("a", &[]), spec("b", &[])]);
    if let Some(a) = graph.tasks.get_mut(ids[0]) {
        a.record.status = TaskStatus::Succeeded;
    }
    let mut run = graph.objectives.remove(&objective).expect("the objective");
    let spawned = graph.add_tasks(
        objective,
        &mut run,
        &[spec("c", &["a", "b"])],
        &[2],
        Some(ids[1]),
        BatchExtras::new(),
    );
    graph.objectives.insert(objective, run);
    let c = node(&graph, spawned[0]);
    assert_eq!(c.waiting_on, 1, "`a` succeeded already");
    assert_eq!(c.record.spawned_by, Some(ids[1]));
    assert_eq!(graph.dependents_of(ids[0]), vec![spawned[0]]);
}

#[test]
fn dependents_are_found_transitively_in_id_order() {
    let mut graph = Graph::default();
    let specs = [
        spec("a", &[]),
        spec("b", &["a"]),
        spec("c", &["b"]),
        spec("d", &["a", "c"]),
        spec("e", &[]),
    ];
    let (_, ids) = objective(&mut graph, &specs);
    assert_eq!(graph.dependents_of(ids[0]), vec![ids[1], ids[2], ids[3]]);
    assert_eq!(graph.dependents_of(ids[4]), Vec::<TaskId>::new());
}

#[test]
fn an_input_takes_its_dependencies_outputs_but_not_a_plan() {
    let mut graph = Graph::default();
    let mut uses = spec("uses", &["data", "plan"]);
    uses.input = json!({"got": {"$from": "data", "pointer": "/n"}});
    let (objective, ids) = objective(&mut graph, &[spec("data", &[]), spec("plan", &[]), uses]);
    if let Some(data) = graph.tasks.get_mut(ids[0]) {
        data.record.status = TaskStatus::Succeeded;
        data.record.output = Some(json!({"n": 7}));
    }
    if let Some(plan) = graph.tasks.get_mut(ids[1]) {
        plan.record.planning = Some(Box::default());
    }
    let upstream = graph.upstream(node(&graph, ids[2]));
    assert_eq!(upstream.keys().collect::<Vec<_>>(), vec![&key("data")]);
    assert!(matches!(graph.build_input(ids[2]), Some(Ok(o)) if o == objective));
    assert_eq!(*node(&graph, ids[2]).input, json!({"got": 7}));
}

#[test]
fn follow_ups_depend_on_their_parent_once() {
    let mut graph = Graph::default();
    let (_, ids) = objective(&mut graph, &[spec("parent", &[])]);
    let specs = graph.with_parent(ids[0], &[spec("x", &[]), spec("y", &["parent"])]);
    assert_eq!(specs[0].depends_on, vec![key("parent")]);
    assert_eq!(specs[1].depends_on, vec![key("parent")]);
}

#[test]
fn a_page_counts_every_match_and_goes_on_after_its_last_task() {
    let mut graph = Graph::default();
    let specs: Vec<TaskSpec> = (0..5).map(|i| spec(&format!("t{i}"), &[])).collect();
    let (objective, ids) = objective(&mut graph, &specs);
    objective_other(&mut graph);
    if let Some(t) = graph.tasks.get_mut(ids[1]) {
        t.record.status = TaskStatus::Failed;
    }
    let backlog = |after, newest_first| TaskQuery {
        status: Some(TaskStatus::Backlog),
        objective: Some(objective),
        capability: None,
        agent: None,
        after,
        limit: 2,
        newest_first,
    };
    let page = graph.task_page(&backlog(None, false));
    let listed = |page: &TaskPage| page.tasks.iter().map(|t| t.task.id).collect::<Vec<_>>();
    assert_eq!(page.total, 4);
    assert_eq!(listed(&page), vec![ids[0], ids[2]]);
    assert_eq!(page.next, Some(ids[2]));
    let page = graph.task_page(&backlog(page.next, false));
    assert_eq!(listed(&page), vec![ids[3], ids[4]]);
    assert_eq!(page.next, None, "the last page");
    let newest = graph.task_page(&backlog(None, true));
    assert_eq!(listed(&newest), vec![ids[4], ids[3]]);
    assert!(newest.tasks.iter().all(|t| t.goal == "goal"));
    let all = graph.task_page(&TaskQuery {
        objective: None,
        ..backlog(None, false)
    });
    assert_eq!(all.total, 5, "across objectives");
}

/// Another objective, of one task.
fn objective_other(graph: &mut Graph) {
    objective(graph, &[spec("other", &[])]);
}

#[test]
fn a_forgotten_objective_leaves_no_task_behind() {
    let mut graph = Graph::default();
    let (objective, ids) = objective(&mut graph, &[spec("a", &[]), spec("b", &["a"])]);
    let summary = graph.summary(objective).expect("a summary");
    assert_eq!(
        (summary.tasks, summary.status),
        (2, ObjectiveStatus::Running)
    );
    assert!(graph.view(objective).is_some());
    graph.forget(objective);
    assert!(graph.view(objective).is_none());
    assert!(ids.iter().all(|id| graph.tasks.get(*id).is_none()));
}
