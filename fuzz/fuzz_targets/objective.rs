//! Task graphs as users and schedules submit them: the JSON of an `Objective` (and of one
//! `TaskSpec`), the graph checks every submitted graph passes, and `$from` references.
//!
//! Properties: nothing panics; the server's body parser (`swarm_server::problem::parse_json`,
//! which names the field at fault) accepts exactly what `serde_json` accepts within the
//! ceilings on JSON (`swarm_protocol::bounds`); whatever parses re-serializes and parses back
//! equal (the event log stores specs as JSON and must read them back); validation is
//! deterministic; a task whose references check out resolves them against its dependencies'
//! outputs without `NotADependency`.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use swarm_protocol::bounds::{JsonLimits, check_json};
use swarm_protocol::graph::{self, NoTasks};
use swarm_protocol::task::{
    InputError, check_compensation_references, check_references, has_references, resolve_input,
};
use swarm_protocol::{Limits, Objective, TaskSpec};

fuzz_target!(|data: &[u8]| {
    let parsed = serde_json::from_slice::<Objective>(data);
    let served = swarm_server::problem::parse_json::<Objective>(data);
    match (&parsed, &served) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(problem)) => assert!(matches!(problem.status, 400 | 422), "{problem:?}"),
        // Past the server's ceilings on JSON (depth, string and array sizes).
        (Ok(_), Err(problem)) if problem.kind.ends_with(":over-limit") => {
            let value: Value = serde_json::from_slice(data).expect("it parsed as an objective");
            assert!(
                check_json(&value, &JsonLimits::default()).is_err(),
                "{problem:?}"
            );
        }
        // An array as the whole body: serde reads it into a struct field by field, the server
        // refuses it (422).
        (Ok(_), Err(problem))
            if problem.status == 422
                && matches!(serde_json::from_slice::<Value>(data), Ok(Value::Array(_))) => {}
        _ => panic!("serde_json: {parsed:?}, the server: {served:?}"),
    }
    if let Ok(objective) = parsed {
        check_objective(&objective);
    }
    if let Ok(spec) = serde_json::from_slice::<TaskSpec>(data) {
        let text = serde_json::to_vec(&spec).expect("a parsed spec serializes");
        let back: TaskSpec = serde_json::from_slice(&text).expect("a serialized spec parses");
        assert_eq!(back, spec);
        check_spec(&spec, &BTreeMap::new());
    }
});

fn check_objective(objective: &Objective) {
    let text = serde_json::to_vec(objective).expect("a parsed objective serializes");
    let back: Objective = serde_json::from_slice(&text).expect("a serialized objective parses");
    assert_eq!(&back, objective);
    assert_eq!(back.fingerprint(), objective.fingerprint());

    let defaults = graph::validate(&objective.tasks, &NoTasks, &Limits::default());
    assert_eq!(
        defaults,
        graph::validate(&objective.tasks, &NoTasks, &Limits::default()),
        "validation is deterministic"
    );
    let own = graph::validate(&objective.tasks, &NoTasks, &objective.limits);
    if let Ok(depths) = &own {
        assert_eq!(depths.len(), objective.tasks.len());
        assert!(
            depths
                .iter()
                .all(|&d| d >= 1 && d <= objective.limits.max_depth)
        );
    }
    // Each task's dependencies "answer" with their own input: resolution then runs over
    // arbitrary JSON, as it does over agents' outputs.
    let outputs: BTreeMap<_, _> = objective
        .tasks
        .iter()
        .map(|t| (t.id.clone(), t.input.clone()))
        .collect();
    for spec in &objective.tasks {
        let upstream: BTreeMap<_, _> = spec
            .depends_on
            .iter()
            .filter_map(|d| outputs.get(d).map(|o| (d.clone(), o.clone())))
            .collect();
        check_spec(spec, &upstream);
    }
}

fn check_spec(spec: &TaskSpec, upstream: &BTreeMap<swarm_protocol::TaskKey, Value>) {
    let checked = check_references(spec);
    let _ = check_compensation_references(spec);
    let resolved = resolve_input(&spec.input, upstream);
    if !has_references(&spec.input) {
        assert_eq!(
            resolved.as_ref(),
            Ok(&spec.input),
            "no reference, nothing changes"
        );
    }
    if checked.is_ok() && upstream.len() == spec.depends_on.len() {
        assert!(
            !matches!(
                resolved,
                Err(InputError::NotADependency(_)) | Err(InputError::Malformed)
            ),
            "references that check out resolve: {resolved:?}"
        );
    }
}
