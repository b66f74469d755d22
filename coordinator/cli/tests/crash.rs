//! The crash test: the real `swarm` binary, killed with SIGKILL at random points while it runs a
//! batch of objectives, restarted on the same data directory each time.
//!
//! It checks what durability promises: every objective whose submission was acknowledged
//! finishes (under the id it was acknowledged with); no task recorded as completed runs again
//! (the `work` agents append every attempt they begin to an execution log outside the data
//! directory, and no attempt key appears twice); and the final outputs equal those of a run
//! that was never killed.
//!
//! Set `CRASH_SEED` to replay a particular sequence of kill points.

#![allow(missing_docs, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use swarm_coordinator::replay::replay_objective;
use swarm_protocol::{Event, ObjectiveId, ObjectiveStatus};
use swarm_store::{EventStore, SqliteOptions, SqliteStore};

const BIN: &str = env!("CARGO_BIN_EXE_swarm");
const OBJECTIVES: usize = 200;
const KILLS: usize = 24;

/// The work slots of a run that is killed: two `work` agents taking one task each. Few slots
/// make the batch's work long (see [`write_batch`]) while each task stays short. The runs
/// that are not killed (the reference and the last) take four tasks per agent, to be quick.
const SLOTS: u32 = 2;

/// The longest a task sleeps.
const MAX_TASK_MS: u64 = 12;

/// 200 objectives, each a DAG with fan-out and fan-in (and every fifth one spawning tasks):
/// `a` → `b0..b3` → `c` → `d` (which also depends on `a`). Each task but `d` sleeps 2 to
/// [`MAX_TASK_MS`] ms (a spawned task as long as its parent). Returns the least time the
/// batch's work takes on [`SLOTS`] slots, however fast the machine: the sum of the sleeps over
/// the slots.
fn write_batch(path: &Path, rng: &mut fastrand::Rng) -> Duration {
    let mut text = String::new();
    let mut slept = 0;
    for i in 0..OBJECTIVES {
        let mut ms = |rng: &mut fastrand::Rng, times: u64| {
            let ms = rng.u64(2..=MAX_TASK_MS);
            slept += ms * times;
            ms
        };
        let mut tasks =
            vec![json!({"id": "a", "capability": "work", "input": {"n": i, "ms": ms(rng, 1)}})];
        for b in 0..4 {
            let spawns = b == 0 && i % 5 == 0;
            let mut input = json!({"n": b + 1, "ms": ms(rng, if spawns { 3 } else { 1 })});
            if spawns {
                input["spawn"] = json!(2);
            }
            tasks.push(json!({"id": format!("b{b}"), "capability": "work", "depends_on": ["a"], "input": input}));
        }
        tasks.push(json!({"id": "c", "capability": "work", "depends_on": ["b0", "b1", "b2", "b3"], "input": {"ms": ms(rng, 1)}}));
        tasks.push(
            json!({"id": "d", "capability": "work", "depends_on": ["c", "a"], "input": {"n": 7}}),
        );
        let line = json!({
            "idempotency_key": format!("objective-{i}"),
            "objective": {"goal": format!("crash test {i}"), "tasks": tasks},
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
    Duration::from_millis(slept) / SLOTS
}

/// A running `swarm run`, with its standard output as lines on a channel.
struct Run {
    child: Child,
    lines: Receiver<String>,
}

/// Starts `swarm run` with two `work` agents taking `concurrency` tasks each.
fn start(data_dir: &Path, batch: &Path, exec_log: &Path, concurrency: u32) -> Run {
    let mut child = Command::new(BIN)
        .args(["run", "--agents", "2", "--concurrency"])
        .arg(concurrency.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--file")
        .arg(batch)
        .arg("--exec-log")
        .arg(exec_log)
        // A swarm.toml of the working directory, or SWARM_CONFIG, would be read: neither is.
        .current_dir(batch.parent().unwrap())
        .env_remove("SWARM_CONFIG")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Run { child, lines }
}

/// What a run printed: acknowledged submissions (key → id) and finished objectives.
#[derive(Default)]
struct Seen {
    accepted: BTreeMap<String, ObjectiveId>,
    finished: BTreeSet<ObjectiveId>,
}

impl Seen {
    fn note(&mut self, line: &str) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["accepted", key, id] => {
                let id: ObjectiveId = id.parse().unwrap();
                if let Some(before) = self.accepted.insert((*key).to_string(), id) {
                    assert_eq!(before, id, "key {key} acknowledged with two different ids");
                }
            }
            ["finished", id, status] => {
                assert_eq!(*status, "succeeded", "{line}");
                self.finished.insert(id.parse().unwrap());
            }
            _ => {}
        }
    }
}

/// Reads lines until `deadline`, or until `stop_after` lines were read; true if the process
/// closed its output (it ended) first.
fn read_until(run: &Run, seen: &mut Seen, deadline: Instant, stop_after: usize) -> bool {
    if stop_after == 0 {
        return false;
    }
    let mut read = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match run.lines.recv_timeout(left) {
            Ok(line) => {
                seen.note(&line);
                read += 1;
                if read >= stop_after {
                    return false;
                }
            }
            Err(RecvTimeoutError::Timeout) => return false,
            Err(RecvTimeoutError::Disconnected) => return true,
        }
    }
}

/// Runs to the end and checks it exited successfully.
fn finish(mut run: Run, seen: &mut Seen) {
    let ended = read_until(
        &run,
        seen,
        Instant::now() + Duration::from_secs(120),
        usize::MAX,
    );
    assert!(ended, "the final run did not finish within 120 s");
    let status = run.child.wait().unwrap();
    assert!(status.success(), "the final run exited with {status}");
}

/// Final state of every keyed objective: key → (id, status, task key → output), plus the
/// attempt at which each task succeeded and how many attempts were lost to a coordinator
/// crash.
struct Final {
    objectives: BTreeMap<String, (ObjectiveId, ObjectiveStatus, BTreeMap<String, Value>)>,
    succeeded_at: HashMap<(ObjectiveId, u64), u32>,
    lost_to_crash: usize,
}

async fn read_final(data_dir: &Path) -> Final {
    let store = SqliteStore::open(SqliteOptions::new(data_dir))
        .await
        .unwrap();
    let mut out = Final {
        objectives: BTreeMap::new(),
        succeeded_at: HashMap::new(),
        lost_to_crash: 0,
    };
    for stored in store.keyed_objectives().await.unwrap() {
        let (model, events) = replay_objective(&store, stored.id).await.unwrap().unwrap();
        let view = model.view();
        let outputs = view
            .tasks
            .iter()
            .map(|t| (t.key.to_string(), t.output.clone().unwrap_or(Value::Null)))
            .collect();
        for record in &events {
            match &record.event {
                Event::TaskSucceeded { task, attempt, .. } => {
                    out.succeeded_at.insert((stored.id, task.0), *attempt);
                }
                Event::AttemptLost { reason, .. } if reason.contains("coordinator") => {
                    out.lost_to_crash += 1;
                }
                _ => {}
            }
        }
        let key = stored.idempotency_key.unwrap();
        out.objectives
            .insert(key, (stored.id, view.status, outputs));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_coordinator_loses_nothing_and_repeats_nothing() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("crash test seed: {seed} (set CRASH_SEED to repeat)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let batch = dir.path().join("objectives.jsonl");
    let least_work = write_batch(&batch, &mut rng);

    // The reference: the same batch, never killed.
    let calm_dir = dir.path().join("calm");
    let calm_log = dir.path().join("calm-exec.log");
    let mut calm_seen = Seen::default();
    finish(start(&calm_dir, &batch, &calm_log, 4), &mut calm_seen);
    assert_eq!(calm_seen.accepted.len(), OBJECTIVES);
    let calm = read_final(&calm_dir).await;

    // The same batch, killed again and again. A run works (its agents exist) only once it has
    // printed its first line, and each lives at most `window` after it: so all the killed runs
    // together work at most half the batch's least work, and however fast the machine, the
    // batch cannot end before the last kill. (Reading the first line may lag its printing;
    // the other half is the margin for that.)
    //
    // The scheduler fails a task whose attempts were lost more than 5 times (a poison-pill
    // guard), so a task must not be in flight at too many kills: a timed kill comes at least
    // `floor` after the first line, by when the attempts the previous kill cut off (resumed
    // first, on the slots they left) have ended.
    let window = least_work / 2 / u32::try_from(KILLS).unwrap();
    let floor = Duration::from_millis(3 * MAX_TASK_MS);
    assert!(
        window > 2 * floor,
        "the batch is too short for {KILLS} kills"
    );
    let data_dir: PathBuf = dir.path().join("killed");
    let exec_log = dir.path().join("exec.log");
    let mut seen = Seen::default();
    for kill in 0..KILLS {
        let mut run = start(&data_dir, &batch, &exec_log, SLOTS / 2);
        let started = Instant::now();
        assert!(
            !read_until(&run, &mut seen, started + Duration::from_secs(60), 1),
            "run {kill} ended before its first line"
        );
        let working = Instant::now();
        // Half the kill points are times (before, during or between commits); half come right
        // after an acknowledgement or an objective's end was printed, that is just after a
        // commit.
        let ended = if kill % 2 == 0 {
            let at = floor + (window - floor).mul_f64(rng.f64());
            read_until(&run, &mut seen, working + at, usize::MAX)
        } else {
            let lines = rng.usize(0..60);
            read_until(&run, &mut seen, working + window, lines)
        };
        assert!(
            !ended,
            "run {kill} finished the batch {:?} after its first line, though the killed runs \
             together work at most {:?} of the {least_work:?} the batch needs",
            working.elapsed(),
            least_work / 2
        );
        run.child.kill().unwrap(); // SIGKILL
        let _ = run.child.wait();
    }
    let acknowledged_before_final = seen.accepted.clone();
    finish(start(&data_dir, &batch, &exec_log, 4), &mut seen);

    let killed = read_final(&data_dir).await;

    // Every acknowledged objective finished, under the id it was acknowledged with, and
    // resubmitting its key never created a second one.
    assert_eq!(killed.objectives.len(), OBJECTIVES, "one objective per key");
    for (key, id) in &acknowledged_before_final {
        let (final_id, status, _) = &killed.objectives[key];
        assert_eq!(final_id, id, "{key} was acknowledged as {id}");
        assert_eq!(*status, ObjectiveStatus::Succeeded, "{key}");
    }
    for (key, (_, status, _)) in &killed.objectives {
        assert_eq!(*status, ObjectiveStatus::Succeeded, "{key}");
    }

    // No attempt ran twice, and no task ran again after its success was recorded.
    let text = std::fs::read_to_string(&exec_log).unwrap();
    let mut runs: HashMap<(ObjectiveId, u64, u32), u32> = HashMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [objective, task, attempt, _key] = parts.as_slice() else {
            panic!("bad execution log line {line:?}");
        };
        let objective: ObjectiveId = objective.parse().unwrap();
        let task: u64 = task.parse().unwrap();
        let attempt: u32 = attempt.parse().unwrap();
        *runs.entry((objective, task, attempt)).or_default() += 1;
        let done_at = killed
            .succeeded_at
            .get(&(objective, task))
            .copied()
            .unwrap();
        assert!(
            attempt <= done_at,
            "{objective} task {task} ran attempt {attempt} after attempt {done_at} was recorded as succeeded"
        );
    }
    let repeated: Vec<_> = runs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "attempts that ran more than once: {repeated:?}"
    );
    assert!(
        killed.lost_to_crash > 0,
        "no kill interrupted a running attempt; the kill points missed the work"
    );

    // The outputs are those of the run that was never killed.
    for (key, (_, _, outputs)) in &killed.objectives {
        assert_eq!(outputs, &calm.objectives[key].2, "outputs of {key}");
    }
    eprintln!(
        "{KILLS} kills, {} attempts lost to them, {} attempts run in all",
        killed.lost_to_crash,
        runs.len()
    );
}
