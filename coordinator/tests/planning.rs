//! Decomposition on the fly: objectives submitted with a goal alone are planned by a planner
//! agent (an `LlmAgent` with capability `plan`, configured as in `swarm.toml`) calling the
//! simulated model server over real HTTP on loopback; invalid plans go back to the planner
//! once; a task that fails for good is re-planned; any task may grow the graph through its
//! output (`"spawn"`); the objective's limits bound all of it.
//!
//! Every swarm here runs on a durable log in a temporary directory, so each test also reads
//! the chain of work back from it and checks that replaying the log gives the live view. The
//! planner is told what to answer by a `$sim_reply` (or a `$sim_replies` sequence) object in
//! the goal, which its prompt quotes. Tests wait on the objective's end (`Swarm::wait`) or on
//! an agent's own signal, never on sleeps.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{Value, json};
use swarm_agents::sim::{SimConfig, SimHandle, SimServer};
use swarm_agents::{AgentFactory, EchoAgent, FnAgent};
use swarm_coordinator::config::Config;
use swarm_coordinator::replay::replay_objective;
use swarm_coordinator::{Error, Registration, StoreConfig, Swarm, SwarmConfig};
use swarm_protocol::{
    AgentId, Event, EventRecord, Limits, Objective, ObjectiveId, ObjectiveStatus, ObjectiveView,
    SchedulerError, TaskId, TaskOutcome, TaskSpec, TaskStatus,
};
use swarm_testkit::{PATIENCE, cap, key, reg};
use tempfile::TempDir;
use tokio::sync::mpsc::unbounded_channel;

// ---- Helpers ----------------------------------------------------------------------------------

async fn open(dir: &Path) -> Swarm {
    let mut store = StoreConfig::new(dir);
    store.fsync = false;
    Swarm::open(SwarmConfig::default(), store).await.unwrap()
}

/// Shuts the swarm down and checks that nothing had failed it.
async fn finish(swarm: Swarm) {
    assert_eq!(swarm.failure(), None);
    assert!(swarm.is_running(), "the coordinator stopped on its own");
    swarm.shutdown().await.unwrap();
}

/// Registers the model agents of a `swarm.toml` text (`{base}` stands for the sim's URL) and
/// returns their ids by name.
async fn register_models(swarm: &Swarm, sim: &SimHandle, toml: &str) -> Vec<(String, AgentId)> {
    let config = Config::parse(&toml.replace("{base}", &sim.base_url())).unwrap();
    let mut ids = Vec::new();
    for agent in &config.agents {
        let (registration, factory, _model) = agent.build().unwrap();
        let id = swarm
            .register_agent(registration, factory)
            .await
            .unwrap()
            .id;
        ids.push((agent.name.clone(), id));
    }
    ids
}

/// The planner: a model agent in text mode, as `swarm.toml` would declare it.
const PLANNER: &str = r#"
[[agents]]
name = "planner"
provider = "openai"
base_url = "{base}"
model = "sim"
capabilities = ["plan"]
description = "Breaks goals down into tasks."
system_prompt = "Overridden by the planning task's own."
"#;

/// A researcher: a model agent speaking the other wire format.
const RESEARCHER: &str = r#"
[[agents]]
name = "researcher"
provider = "anthropic"
base_url = "{base}"
model = "sim"
capabilities = ["research"]
description = "Finds facts about a topic."
"#;

/// A writer that echoes what it is given (`{"task", "input", "upstream"}`), so a test sees
/// exactly which outputs reached it.
fn writer() -> (Registration, AgentFactory) {
    (
        reg("writer", &["write"], 4).with_description("Writes a text from the facts it is given."),
        AgentFactory::shared(EchoAgent),
    )
}

/// A sim, a durable swarm in a fresh directory, the planner, the researcher and the writer.
struct Fleet {
    _dir: TempDir,
    sim: SimHandle,
    swarm: Swarm,
}

async fn fleet() -> Fleet {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimServer::start(SimConfig::default()).await.unwrap();
    let swarm = open(dir.path()).await;
    register_models(&swarm, &sim, &format!("{PLANNER}{RESEARCHER}")).await;
    let (registration, factory) = writer();
    swarm.register_agent(registration, factory).await.unwrap();
    Fleet {
        _dir: dir,
        sim,
        swarm,
    }
}

impl Fleet {
    /// Submits a goal alone and waits for the objective to end.
    async fn plan_and_run(&self, goal: String, limits: Limits) -> ObjectiveView {
        let objective = Objective {
            goal,
            tasks: Vec::new(),
            priority: 0,
            limits,
        };
        self.run(objective).await
    }

    async fn run(&self, objective: Objective) -> ObjectiveView {
        let id = self.swarm.submit(objective).await.unwrap();
        self.swarm.wait(id, PATIENCE).await.unwrap()
    }

    /// The objective's chain of work, from the log; also checks that replaying the log alone
    /// gives exactly the live view.
    async fn chain(&self, view: &ObjectiveView) -> Vec<Event> {
        let store = self.swarm.store().unwrap().clone();
        let (model, records) = replay_objective(&*store, view.id).await.unwrap().unwrap();
        assert_eq!(&model.view(), view, "the replayed view equals the live one");
        records.into_iter().map(|r: EventRecord| r.event).collect()
    }

    async fn finish(self) {
        finish(self.swarm).await;
        self.sim.shutdown().await.unwrap();
    }
}

/// A goal whose planner answers `reply` (see the sim's `$sim_reply`).
fn goal_answered(goal: &str, reply: Value) -> String {
    format!("{goal} {}", json!({ "$sim_reply": reply }))
}

/// A goal whose planner answers `replies` in turn (see the sim's `$sim_replies`).
fn goal_answered_in_turn(goal: &str, replies: Vec<Value>) -> String {
    format!("{goal} {}", json!({ "$sim_replies": replies }))
}

/// `research` (a model agent) then `write`, which is given `research`'s output through `$from`.
fn research_then_write() -> Value {
    json!({"tasks": [
        {"id": "research", "capability": "research", "input": "Find two facts about Rust."},
        {"id": "write", "capability": "write",
         "input": {"facts": {"$from": "research"}, "style": "short"},
         "depends_on": ["research"]}
    ]})
}

/// The inputs the scheduler built for a task's attempts (`TaskStarted::input`), in order.
fn built_inputs(chain: &[Event], task: TaskId) -> Vec<Value> {
    chain
        .iter()
        .filter_map(|e| match e {
            Event::TaskStarted {
                task: t,
                input: Some(input),
                ..
            } if *t == task => Some(input.clone()),
            _ => None,
        })
        .collect()
}

fn prompt_of(input: &Value) -> &str {
    input["prompt"].as_str().unwrap()
}

fn rejections(chain: &[Event]) -> Vec<(u32, Vec<String>, bool)> {
    chain
        .iter()
        .filter_map(|e| match e {
            Event::PlanRejected {
                attempt,
                errors,
                repair,
                ..
            } => Some((*attempt, errors.clone(), *repair)),
            _ => None,
        })
        .collect()
}

// ---- (a) A valid plan runs to the end ---------------------------------------------------------

#[tokio::test]
async fn a_valid_plan_runs_on_two_capabilities_with_outputs_flowing_through_from() {
    let fleet = fleet().await;
    // The model wraps its plan in prose and a code fence, as models do.
    let answer = format!(
        "Here is the plan:\n```json\n{}\n```\nLet me know if it needs changes.",
        research_then_write()
    );
    let view = fleet
        .plan_and_run(
            goal_answered("Write a short report on Rust.", json!(answer)),
            Limits::default(),
        )
        .await;
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    let keys: Vec<&str> = view.tasks.iter().map(|t| t.key.as_str()).collect();
    assert_eq!(keys, ["plan", "research", "write"]);
    let plan = view.task("plan").unwrap();
    assert_eq!(plan.capability, cap("plan"));
    let research = view.task("research").unwrap();
    let write = view.task("write").unwrap();
    for task in [research, write] {
        assert_eq!(task.status, TaskStatus::Succeeded);
        assert_eq!(
            task.spawned_by,
            Some(plan.id),
            "the plan's tasks are its children"
        );
    }
    let facts = research.output.clone().unwrap();
    assert!(
        facts.as_str().is_some_and(|t| !t.is_empty()),
        "the researcher model answered text: {facts}"
    );
    // `$from` put research's output into write's input; the plan itself is no input.
    assert_eq!(
        write.output,
        Some(json!({
            "task": "write",
            "input": {"facts": facts, "style": "short"},
            "upstream": {"research": facts},
        }))
    );

    let chain = fleet.chain(&view).await;
    let spawned: Vec<(TaskId, Vec<&str>)> = chain
        .iter()
        .filter_map(|e| match e {
            Event::TasksSpawned { parent, tasks, .. } => {
                Some((*parent, tasks.iter().map(|t| t.id.as_str()).collect()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(spawned, [(plan.id, vec!["research", "write"])]);
    assert!(matches!(
        chain.get(1),
        Some(Event::PlanRequested { task, replan: 0, failed: None, .. }) if *task == plan.id
    ));
    fleet.finish().await;
}

// ---- (b) An invalid plan is repaired ----------------------------------------------------------

#[tokio::test]
async fn an_invalid_plan_goes_back_to_the_planner_once_and_the_repaired_plan_runs() {
    let fleet = fleet().await;
    let invalid = json!({"tasks": [
        {"id": "research", "capability": "paint", "input": "x"},
        {"id": "write", "capability": "write", "depends_on": ["reserch"]}
    ]});
    let view = fleet
        .plan_and_run(
            goal_answered_in_turn("Report on Rust.", vec![invalid, research_then_write()]),
            Limits::default(),
        )
        .await;
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    let plan = view.task("plan").unwrap();
    assert_eq!(plan.attempts, 2, "one repair attempt");
    assert!(view.task("write").unwrap().status == TaskStatus::Succeeded);

    let chain = fleet.chain(&view).await;
    let rejected = rejections(&chain);
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    let (attempt, errors, repair) = &rejected[0];
    assert_eq!((*attempt, *repair), (1, true));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("`write` depends on `reserch`")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("`research` needs capability `paint`")),
        "{errors:?}"
    );
    // The repair attempt's prompt carries the errors and the rejected plan.
    let inputs = built_inputs(&chain, plan.id);
    assert_eq!(inputs.len(), 2);
    assert!(!prompt_of(&inputs[0]).contains("rejected"));
    let repair_prompt = prompt_of(&inputs[1]);
    assert!(
        repair_prompt.contains("Your previous plan was rejected")
            && repair_prompt.contains("depends on `reserch`")
            && repair_prompt.contains("\"paint\""),
        "{repair_prompt}"
    );
    fleet.finish().await;
}

// ---- (c) A cyclic plan, twice -----------------------------------------------------------------

#[tokio::test]
async fn a_cyclic_plan_twice_fails_the_objective_naming_the_cycle() {
    let fleet = fleet().await;
    let cyclic = json!({"tasks": [
        {"id": "a", "capability": "write", "depends_on": ["b"]},
        {"id": "b", "capability": "write", "depends_on": ["a"]}
    ]});
    let view = fleet
        .plan_and_run(goal_answered("Go round.", cyclic), Limits::default())
        .await;
    assert_eq!(view.status, ObjectiveStatus::Failed, "{view:#?}");
    let failure = view.failure.clone().unwrap();
    assert!(
        failure.contains("task `plan`") && failure.contains("tasks form a cycle: a -> b -> a"),
        "{failure}"
    );
    assert_eq!(view.tasks.len(), 1, "nothing of the plan joined the graph");
    assert_eq!(view.task("plan").unwrap().status, TaskStatus::Failed);
    let chain = fleet.chain(&view).await;
    let rejected = rejections(&chain);
    let repairs: Vec<(u32, bool)> = rejected.iter().map(|(a, _, r)| (*a, *r)).collect();
    assert_eq!(repairs, [(1, true), (2, false)]);
    for (_, errors, _) in &rejected {
        assert!(errors[0].contains("a -> b -> a"), "{errors:?}");
    }
    fleet.finish().await;
}

// ---- (d) Spawning through output --------------------------------------------------------------

/// A research task whose model answers JSON (`"json": true`) holding three follow-ups.
fn splitting_task() -> TaskSpec {
    let parts: Vec<Value> = (1..=3)
        .map(|i| json!({"id": format!("part-{i}"), "capability": "write", "input": i}))
        .collect();
    let answer = json!({"spawn": parts, "output": "split in three"});
    TaskSpec::new(key("split"), cap("research")).with_input(json!({
        "prompt": format!("Split the work. {}", json!({"$sim_reply": answer})),
        "json": true,
    }))
}

#[tokio::test]
async fn a_model_task_spawns_three_follow_ups_through_its_json_output() {
    let fleet = fleet().await;
    let view = fleet
        .run(Objective::with_tasks("split", vec![splitting_task()]))
        .await;
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    let split = view.task("split").unwrap();
    assert_eq!(split.output, Some(json!("split in three")));
    for i in 1..=3 {
        let part = view.task(&format!("part-{i}")).unwrap();
        assert_eq!(part.status, TaskStatus::Succeeded);
        assert_eq!(part.spawned_by, Some(split.id));
        assert_eq!(
            part.output,
            Some(json!({
                "task": format!("part-{i}"),
                "input": i,
                "upstream": {"split": "split in three"},
            }))
        );
    }
    let chain = fleet.chain(&view).await;
    assert!(chain.iter().any(
        |e| matches!(e, Event::TasksSpawned { parent, tasks, .. } if *parent == split.id && tasks.len() == 3)
    ));
    fleet.finish().await;
}

#[tokio::test]
async fn a_malformed_spawn_fails_the_task_naming_the_field() {
    let fleet = fleet().await;
    let answer = json!({"spawn": [{"id": "p", "capability": "write"}, {"id": "q"}]});
    let task = TaskSpec::new(key("split"), cap("research")).with_input(json!({
        "prompt": format!("Split. {}", json!({"$sim_reply": answer})),
        "json": true,
    }));
    let view = fleet
        .run(Objective::with_tasks("split badly", vec![task]))
        .await;
    assert_eq!(view.status, ObjectiveStatus::Failed);
    let split = view.task("split").unwrap();
    assert_eq!(split.attempts, 1, "a malformed spawn is not retried");
    let error = split.error.clone().unwrap();
    assert!(
        error.contains("output field `spawn[1]`") && error.contains("capability"),
        "{error}"
    );
    fleet.chain(&view).await;
    fleet.finish().await;
}

// ---- (e) Limits -------------------------------------------------------------------------------

#[tokio::test]
async fn a_spawn_or_a_plan_past_max_tasks_fails_the_objective_naming_the_limit() {
    let fleet = fleet().await;
    let small = Limits {
        max_tasks: 3,
        // A breached limit is not re-planned, even where re-planning is allowed.
        max_replans: Some(1),
        ..Limits::default()
    };
    let objective = Objective {
        limits: small,
        ..Objective::with_tasks("split too far", vec![splitting_task()])
    };
    let view = fleet.run(objective).await;
    assert_eq!(view.status, ObjectiveStatus::Failed, "{view:#?}");
    let failure = view.failure.clone().unwrap();
    assert!(
        failure.contains("task `split`") && failure.contains("max_tasks = 3"),
        "{failure}"
    );
    assert_eq!(view.tasks.len(), 1, "no follow-up joined the graph");
    let chain = fleet.chain(&view).await;
    assert!(
        !chain
            .iter()
            .any(|e| matches!(e, Event::PlanRequested { .. }))
    );

    // A plan of two tasks does not fit in two (the planning task counts): rejected, repaired
    // into the same, and the objective fails naming the limit.
    let view = fleet
        .plan_and_run(
            goal_answered("Too much.", research_then_write()),
            Limits {
                max_tasks: 2,
                ..Limits::default()
            },
        )
        .await;
    assert_eq!(view.status, ObjectiveStatus::Failed, "{view:#?}");
    let failure = view.failure.clone().unwrap();
    assert!(
        failure.contains("task `plan`") && failure.contains("max_tasks = 2"),
        "{failure}"
    );
    let chain = fleet.chain(&view).await;
    let prompt = prompt_of(&built_inputs(&chain, view.tasks[0].id)[0]).to_owned();
    assert!(prompt.contains("at most 1 tasks in your plan"), "{prompt}");
    fleet.finish().await;
}

// ---- (f) Re-planning --------------------------------------------------------------------------

/// A fetcher whose model refuses every request (400: permanent).
const BROKEN_FETCHER: &str = r#"
[[agents]]
name = "fetcher"
provider = "openai"
base_url = "{base}"
model = "sim:fail=400"
capabilities = ["fetch"]
description = "Fetches documents."
"#;

/// `fetch` (which fails for good), `write` from it, and an independent `research`.
fn fetch_plan() -> Value {
    json!({"tasks": [
        {"id": "fetch", "capability": "fetch", "input": "Get the document."},
        {"id": "write", "capability": "write", "input": {"$from": "fetch"}, "depends_on": ["fetch"]},
        {"id": "research", "capability": "research", "input": "Find facts."}
    ]})
}

/// The replacement: write from `research`, which the first plan made.
fn replacement_plan() -> Value {
    json!({"tasks": [
        {"id": "write-from-research", "capability": "write",
         "input": {"facts": {"$from": "research"}}, "depends_on": ["research"]}
    ]})
}

#[tokio::test]
async fn a_task_failing_for_good_is_re_planned_and_the_new_plan_runs_to_success() {
    let fleet = fleet().await;
    register_models(&fleet.swarm, &fleet.sim, BROKEN_FETCHER).await;
    let view = fleet
        .plan_and_run(
            goal_answered_in_turn(
                "Report on a document.",
                vec![fetch_plan(), replacement_plan()],
            ),
            Limits::default(),
        )
        .await;
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    let fetch = view.task("fetch").unwrap();
    assert_eq!(fetch.status, TaskStatus::Failed);
    assert!(fetch.error.as_deref().unwrap().contains("400"), "{fetch:?}");
    assert_eq!(
        view.task("write").unwrap().status,
        TaskStatus::Cancelled,
        "the work that depended on the failed task was dropped"
    );
    let replan = view.task("replan-1").unwrap();
    assert_eq!(replan.status, TaskStatus::Succeeded);
    let research = view.task("research").unwrap();
    assert_eq!(research.status, TaskStatus::Succeeded);
    let replacement = view.task("write-from-research").unwrap();
    assert_eq!(replacement.spawned_by, Some(replan.id));
    assert_eq!(
        replacement.output.as_ref().unwrap()["input"]["facts"],
        research.output.clone().unwrap(),
        "the new plan used the output of a task that succeeded before"
    );

    let chain = fleet.chain(&view).await;
    assert!(chain.iter().any(|e| matches!(
        e,
        Event::PlanRequested { task, replan: 1, failed: Some(failed), .. }
            if *task == replan.id && *failed == fetch.id
    )));
    let prompt = prompt_of(&built_inputs(&chain, replan.id)[0]).to_owned();
    for needle in [
        "task `fetch` failed for good",
        "Tasks that failed",
        "- fetch: ",
        "400",
        "Tasks dropped",
        "- write\n",
        "Goal: Report on a document.",
    ] {
        assert!(
            prompt.contains(needle),
            "{needle:?} missing from:\n{prompt}"
        );
    }
    assert!(
        prompt.contains("- research: ") || prompt.contains("- research (running)"),
        "{prompt}"
    );
    fleet.finish().await;
}

#[tokio::test]
async fn with_re_planning_off_or_used_up_a_failure_fails_the_objective() {
    let fleet = fleet().await;
    register_models(&fleet.swarm, &fleet.sim, BROKEN_FETCHER).await;
    let off = Limits {
        max_replans: Some(0),
        ..Limits::default()
    };
    let view = fleet
        .plan_and_run(goal_answered("No second chance.", fetch_plan()), off)
        .await;
    assert_eq!(view.status, ObjectiveStatus::Failed);
    assert!(view.failure.as_deref().unwrap().contains("task `fetch`"));
    assert!(view.task("replan-1").is_none());

    // The default allows one re-plan; when its plan fails too, that is the end.
    let again = json!({"tasks": [{"id": "fetch-again", "capability": "fetch", "input": "x"}]});
    let view = fleet
        .plan_and_run(
            goal_answered_in_turn("Same again.", vec![fetch_plan(), again]),
            Limits::default(),
        )
        .await;
    assert_eq!(view.status, ObjectiveStatus::Failed, "{view:#?}");
    let failure = view.failure.clone().unwrap();
    assert!(failure.contains("task `fetch-again`"), "{failure}");
    assert_eq!(view.task("replan-1").unwrap().status, TaskStatus::Succeeded);
    assert_eq!(view.task("fetch").unwrap().status, TaskStatus::Failed);
    assert!(view.task("replan-2").is_none());
    fleet.chain(&view).await;

    // An explicit graph is not re-planned by default.
    let view = fleet
        .run(Objective::with_tasks(
            "explicit",
            vec![TaskSpec::new(key("fetch"), cap("fetch")).with_input(json!("x"))],
        ))
        .await;
    assert_eq!(view.status, ObjectiveStatus::Failed);
    assert_eq!(view.tasks.len(), 1);
    fleet.finish().await;
}

// ---- (g) The planner's prompt -----------------------------------------------------------------

#[tokio::test]
async fn the_planner_prompt_lists_the_registered_capabilities_with_their_descriptions() {
    let fleet = fleet().await;
    // A second researcher with its own description, and an agent that gives none.
    register_models(
        &fleet.swarm,
        &fleet.sim,
        &RESEARCHER
            .replace("\"researcher\"", "\"archivist\"")
            .replace(
                "Finds facts about a topic.",
                "Looks things up in the archive.",
            ),
    )
    .await;
    fleet
        .swarm
        .register_agent(
            reg("translator", &["translate"], 1),
            AgentFactory::shared(EchoAgent),
        )
        .await
        .unwrap();
    let view = fleet
        .plan_and_run(
            goal_answered("Write a short report on Rust.", research_then_write()),
            Limits {
                max_tasks: 20,
                max_depth: 5,
                max_fanout: 4,
                ..Limits::default()
            },
        )
        .await;
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    let chain = fleet.chain(&view).await;
    let inputs = built_inputs(&chain, view.task("plan").unwrap().id);
    assert_eq!(inputs.len(), 1);
    let input = &inputs[0];
    assert_eq!(input["max_tokens"], json!(4096));
    assert!(input["system"].as_str().unwrap().contains("planner"));
    let prompt = prompt_of(input);
    for needle in [
        "Goal: Write a short report on Rust.",
        "- research: Finds facts about a topic. / Looks things up in the archive.\n",
        "- translate\n",
        "- write: Writes a text from the facts it is given.\n",
        "at most 19 tasks in your plan",
        "longer than 4",
        "more than 4 tasks",
        r#"{"tasks": [{"id": "#,
        r#"{"$from": "<task id>"}"#,
    ] {
        assert!(
            prompt.contains(needle),
            "{needle:?} missing from:\n{prompt}"
        );
    }
    assert!(
        !prompt.contains("- plan"),
        "the planner's own capability is not offered"
    );
    // Only planning tasks get a built input.
    let others = chain
        .iter()
        .filter(|e| matches!(e, Event::TaskStarted { input: Some(_), .. }))
        .count();
    assert_eq!(others, 1);
    fleet.finish().await;
}

#[tokio::test]
async fn a_goal_alone_is_refused_while_no_planner_has_registered() {
    let dir = tempfile::tempdir().unwrap();
    let swarm = open(dir.path()).await;
    let (registration, factory) = writer();
    swarm.register_agent(registration, factory).await.unwrap();
    let err = swarm
        .submit(Objective::with_tasks("plan it yourself", Vec::new()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Scheduler(SchedulerError::NoPlanner)),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("`tasks`") && text.contains("planner"),
        "{text}"
    );
    finish(swarm).await;
}

// ---- Recovery ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_planning_task_cut_off_by_a_restart_resumes_with_its_rejection_and_plans() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimServer::start(SimConfig::default()).await.unwrap();
    let goal = goal_answered("Resume me.", research_then_write());

    // First run: the planner answers nonsense, then hangs in its repair attempt.
    let swarm = open(dir.path()).await;
    let (started_tx, mut started) = unbounded_channel();
    let calls = Arc::new(AtomicU32::new(0));
    let planner = FnAgent::new(move |task, _ctx| {
        let started = started_tx.clone();
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 {
                return TaskOutcome::success(json!("I would rather not."));
            }
            let _ = started.send(task);
            std::future::pending::<TaskOutcome>().await
        }
    });
    swarm
        .register_agent(reg("stubborn", &["plan"], 1), AgentFactory::shared(planner))
        .await
        .unwrap();
    let (registration, factory) = writer();
    swarm.register_agent(registration, factory).await.unwrap();
    let id: ObjectiveId = swarm
        .submit(Objective::with_tasks(goal, Vec::new()))
        .await
        .unwrap();
    let repair = tokio::time::timeout(PATIENCE, started.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(repair.attempt, 2);
    assert!(
        repair.input["prompt"]
            .as_str()
            .unwrap()
            .contains("I would rather not.")
    );
    finish(swarm).await;

    // Second run: the model planner answers; the repair prompt survived the restart. The
    // planner registers last, so its prompt sees the others.
    let swarm = open(dir.path()).await;
    assert_eq!(swarm.resumed(), [id]);
    let (registration, factory) = writer();
    swarm.register_agent(registration, factory).await.unwrap();
    register_models(&swarm, &sim, &format!("{RESEARCHER}{PLANNER}")).await;
    let view = swarm.wait(id, PATIENCE).await.unwrap();
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    let plan = view.task("plan").unwrap();
    assert_eq!(
        plan.attempts, 3,
        "the cut-off attempt ran again as attempt 3"
    );
    assert_eq!(view.task("write").unwrap().status, TaskStatus::Succeeded);
    let chain: Vec<Event> = swarm
        .chain(id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect();
    let inputs = built_inputs(&chain, plan.id);
    assert_eq!(inputs.len(), 3);
    let resumed = prompt_of(&inputs[2]);
    assert!(
        resumed.contains("Your previous plan was rejected")
            && resumed.contains("I would rather not."),
        "{resumed}"
    );
    assert!(
        resumed.contains("- research: Finds facts about a topic."),
        "the prompt lists the agents registered after the restart: {resumed}"
    );
    let store = swarm.store().unwrap().clone();
    let (model, _) = replay_objective(&*store, id).await.unwrap().unwrap();
    assert_eq!(model.view(), view);
    finish(swarm).await;
    sim.shutdown().await.unwrap();
}
