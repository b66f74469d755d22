//! Validation of task graphs: the checks every graph passes before the scheduler accepts it,
//! whether a user wrote it, a planner produced it, or a task spawned it. Each task's own
//! fields are checked against their ceilings ([`crate::bounds`]) here too, so no path into
//! the scheduler skips them.

use std::collections::HashMap;

use crate::ids::TaskKey;
use crate::objective::Limits;
use crate::task::TaskSpec;

/// Why a task graph was refused. Each variant names the offending tasks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// The objective has no tasks and no planner could be asked.
    #[error("the graph has no tasks")]
    Empty,
    /// Two tasks share a name.
    #[error("task id `{0}` is used more than once")]
    DuplicateId(TaskKey),
    /// A dependency names no task of the objective.
    #[error("task `{task}` depends on `{dependency}`, which is not a task of this objective")]
    UnknownDependency {
        /// The task that declares the dependency.
        task: TaskKey,
        /// The missing name.
        dependency: TaskKey,
    },
    /// The dependencies form a cycle; the tasks are listed in order around it.
    #[error("tasks form a cycle: {}", cycle_text(.0))]
    Cycle(Vec<TaskKey>),
    /// The graph holds more tasks than the objective's limit.
    #[error("the graph would hold {count} tasks, more than the limit max_tasks = {limit}")]
    TooManyTasks {
        /// Tasks there would be.
        count: u64,
        /// The limit.
        limit: u32,
    },
    /// A dependency chain is longer than the objective's limit.
    #[error("task `{task}` would sit at depth {depth}, deeper than the limit max_depth = {limit}")]
    TooDeep {
        /// The task at the bottom of the chain.
        task: TaskKey,
        /// Its depth.
        depth: u32,
        /// The limit.
        limit: u32,
    },
    /// Too many tasks hang directly off one task.
    #[error(
        "task `{task}` would have {count} direct dependents, more than the limit max_fanout = {limit}"
    )]
    TooWide {
        /// The task.
        task: TaskKey,
        /// Its direct dependents.
        count: u64,
        /// The limit.
        limit: u32,
    },
    /// A field of a task is past its ceiling (see [`crate::bounds`]): a duration longer than
    /// [`crate::bounds::DURATION_MAX`], or JSON nested deeper than the log can read back.
    #[error("task `{task}`: `{field}`: {message}")]
    OutOfBounds {
        /// The task.
        task: TaskKey,
        /// The field within the task (`hard_timeout`, `input.a.b`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

fn cycle_text(cycle: &[TaskKey]) -> String {
    let mut text: Vec<&str> = cycle.iter().map(TaskKey::as_str).collect();
    if let Some(first) = cycle.first() {
        text.push(first.as_str());
    }
    text.join(" -> ")
}

/// What the validator needs to know about the tasks an objective already has (for spawned
/// tasks, which may depend on them).
pub trait ExistingTasks {
    /// The depth of an existing task, or `None` when there is no task of that name.
    fn depth(&self, key: &TaskKey) -> Option<u32>;
    /// How many tasks the objective holds now.
    fn count(&self) -> usize;
    /// How many direct dependents an existing task has now.
    fn dependents(&self, key: &TaskKey) -> usize;
}

/// An objective with no tasks yet.
pub struct NoTasks;

impl ExistingTasks for NoTasks {
    fn depth(&self, _: &TaskKey) -> Option<u32> {
        None
    }
    fn count(&self) -> usize {
        0
    }
    fn dependents(&self, _: &TaskKey) -> usize {
        0
    }
}

/// Checks `new` tasks (added to `existing` ones) and returns the depth of each new task, in the
/// order given. New tasks may depend on existing tasks and on each other; existing tasks never
/// depend on new ones, so a cycle can only run through new tasks.
pub fn validate(
    new: &[TaskSpec],
    existing: &dyn ExistingTasks,
    limits: &Limits,
) -> Result<Vec<u32>, GraphError> {
    let total = existing.count() as u64 + new.len() as u64;
    if total > u64::from(limits.max_tasks) {
        return Err(GraphError::TooManyTasks {
            count: total,
            limit: limits.max_tasks,
        });
    }
    for spec in new {
        spec.check_bounds()
            .map_err(|bound| GraphError::OutOfBounds {
                task: spec.id.clone(),
                field: bound.field,
                message: bound.message,
            })?;
    }
    let mut index: HashMap<&TaskKey, usize> = HashMap::with_capacity(new.len());
    for (i, spec) in new.iter().enumerate() {
        if index.insert(&spec.id, i).is_some() || existing.depth(&spec.id).is_some() {
            return Err(GraphError::DuplicateId(spec.id.clone()));
        }
    }
    // Edges among new tasks, and fan-out counts.
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); new.len()];
    let mut indegree = vec![0u32; new.len()];
    let mut existing_fanout: HashMap<&TaskKey, usize> = HashMap::new();
    for (i, spec) in new.iter().enumerate() {
        for dep in &spec.depends_on {
            if let Some(&j) = index.get(dep) {
                dependents[j].push(i);
                indegree[i] += 1;
            } else if existing.depth(dep).is_some() {
                *existing_fanout.entry(dep).or_insert(0) += 1;
            } else {
                return Err(GraphError::UnknownDependency {
                    task: spec.id.clone(),
                    dependency: dep.clone(),
                });
            }
        }
    }
    for (key, added) in existing_fanout {
        let count = (existing.dependents(key) + added) as u64;
        if count > u64::from(limits.max_fanout) {
            return Err(GraphError::TooWide {
                task: key.clone(),
                count,
                limit: limits.max_fanout,
            });
        }
    }
    for (j, deps) in dependents.iter().enumerate() {
        if deps.len() as u64 > u64::from(limits.max_fanout) {
            return Err(GraphError::TooWide {
                task: new[j].id.clone(),
                count: deps.len() as u64,
                limit: limits.max_fanout,
            });
        }
    }
    // Kahn's algorithm: depths in topological order; what is left over lies on or behind a cycle.
    let mut depth = vec![0u32; new.len()];
    for (i, spec) in new.iter().enumerate() {
        depth[i] = spec
            .depends_on
            .iter()
            .filter_map(|d| existing.depth(d))
            .max()
            .unwrap_or(0)
            + 1;
    }
    let mut stack: Vec<usize> = (0..new.len()).filter(|&i| indegree[i] == 0).collect();
    let mut seen = 0usize;
    let mut remaining = indegree.clone();
    while let Some(j) = stack.pop() {
        seen += 1;
        if depth[j] > limits.max_depth {
            return Err(GraphError::TooDeep {
                task: new[j].id.clone(),
                depth: depth[j],
                limit: limits.max_depth,
            });
        }
        for &i in &dependents[j] {
            depth[i] = depth[i].max(depth[j] + 1);
            remaining[i] -= 1;
            if remaining[i] == 0 {
                stack.push(i);
            }
        }
    }
    if seen < new.len() {
        return Err(GraphError::Cycle(find_cycle(new, &index, &remaining)));
    }
    Ok(depth)
}

/// Finds one cycle among the tasks Kahn's algorithm could not order (`remaining > 0`): walk
/// backwards along unresolved dependencies until a task repeats.
fn find_cycle(
    new: &[TaskSpec],
    index: &HashMap<&TaskKey, usize>,
    remaining: &[u32],
) -> Vec<TaskKey> {
    let Some(start) = (0..new.len()).find(|&i| remaining[i] > 0) else {
        return Vec::new();
    };
    let mut position: HashMap<usize, usize> = HashMap::new();
    let mut path: Vec<usize> = Vec::new();
    let mut at = start;
    loop {
        if let Some(&p) = position.get(&at) {
            // The path from p onwards is the cycle, in dependency order (`a -> b`: a depends
            // on b).
            return path[p..].iter().map(|&i| new[i].id.clone()).collect();
        }
        position.insert(at, path.len());
        path.push(at);
        // Every unordered task has at least one unordered dependency among the new tasks.
        let next = new[at]
            .depends_on
            .iter()
            .filter_map(|d| index.get(d).copied())
            .find(|&j| remaining[j] > 0);
        match next {
            Some(j) => at = j,
            None => return path.iter().map(|&i| new[i].id.clone()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Capability;

    fn spec(id: &str, deps: &[&str]) -> TaskSpec {
        let key = |s: &str| TaskKey::new(s).unwrap_or_else(|e| panic!("{e}"));
        TaskSpec::new(
            key(id),
            Capability::new("x").unwrap_or_else(|e| panic!("{e}")),
        )
        .after(deps.iter().map(|d| key(d)))
    }

    #[test]
    fn a_diamond_is_accepted_with_depths() {
        let g = [
            spec("a", &[]),
            spec("b", &["a"]),
            spec("c", &["a"]),
            spec("d", &["b", "c"]),
        ];
        assert_eq!(
            validate(&g, &NoTasks, &Limits::default()),
            Ok(vec![1, 2, 2, 3])
        );
    }

    #[test]
    fn a_cycle_is_named_in_order() {
        let g = [
            spec("a", &[]),
            spec("b", &["a", "d"]),
            spec("c", &["b"]),
            spec("d", &["c"]),
        ];
        let Err(GraphError::Cycle(cycle)) = validate(&g, &NoTasks, &Limits::default()) else {
            panic!("expected a cycle");
        };
        let names: Vec<&str> = cycle.iter().map(TaskKey::as_str).collect();
        assert_eq!(names.len(), 3);
        for n in ["b", "c", "d"] {
            assert!(names.contains(&n), "{names:?}");
        }
        let text = GraphError::Cycle(cycle).to_string();
        assert!(text.starts_with("tasks form a cycle: "), "{text}");
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        let g = [spec("a", &["a"])];
        assert!(
            matches!(validate(&g, &NoTasks, &Limits::default()), Err(GraphError::Cycle(c)) if c.len() == 1)
        );
    }

    #[test]
    fn duplicates_unknowns_and_limits_are_named() {
        let l = Limits::default();
        assert!(
            matches!(validate(&[spec("a", &[]), spec("a", &[])], &NoTasks, &l), Err(GraphError::DuplicateId(k)) if k.as_str() == "a")
        );
        assert!(
            matches!(validate(&[spec("a", &["zz"])], &NoTasks, &l), Err(GraphError::UnknownDependency { dependency, .. }) if dependency.as_str() == "zz")
        );
        let small = Limits { max_tasks: 1, ..l };
        assert!(matches!(
            validate(&[spec("a", &[]), spec("b", &[])], &NoTasks, &small),
            Err(GraphError::TooManyTasks { count: 2, limit: 1 })
        ));
        let shallow = Limits { max_depth: 2, ..l };
        assert!(matches!(
            validate(
                &[spec("a", &[]), spec("b", &["a"]), spec("c", &["b"])],
                &NoTasks,
                &shallow
            ),
            Err(GraphError::TooDeep { depth: 3, .. })
        ));
        let narrow = Limits { max_fanout: 1, ..l };
        assert!(matches!(
            validate(
                &[spec("a", &[]), spec("b", &["a"]), spec("c", &["a"])],
                &NoTasks,
                &narrow
            ),
            Err(GraphError::TooWide { count: 2, .. })
        ));
    }

    struct One;
    impl ExistingTasks for One {
        fn depth(&self, key: &TaskKey) -> Option<u32> {
            (key.as_str() == "root").then_some(4)
        }
        fn count(&self) -> usize {
            1
        }
        fn dependents(&self, _: &TaskKey) -> usize {
            0
        }
    }

    #[test]
    fn spawned_tasks_may_depend_on_existing_ones() {
        let g = [spec("x", &["root"]), spec("y", &["x"])];
        assert_eq!(validate(&g, &One, &Limits::default()), Ok(vec![5, 6]));
        assert!(matches!(
            validate(&[spec("root", &[])], &One, &Limits::default()),
            Err(GraphError::DuplicateId(_))
        ));
    }
}
