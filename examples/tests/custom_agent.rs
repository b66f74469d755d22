//! The custom agent example, run end to end.
#![allow(missing_docs)]

use serde_json::json;
use swarm_examples::{FIRST_TEXT, SECOND_TEXT};
use swarm_protocol::{ObjectiveStatus, TaskStatus};

#[tokio::test]
async fn the_custom_agent_counts_the_words_its_upstream_tasks_fetched() -> anyhow::Result<()> {
    let view = swarm_examples::run().await?;
    assert_eq!(view.status, ObjectiveStatus::Succeeded, "{view:#?}");
    assert!(
        view.tasks.iter().all(|t| t.status == TaskStatus::Succeeded),
        "{view:#?}"
    );
    let count = view
        .task("count")
        .ok_or_else(|| anyhow::anyhow!("no count task"))?;
    // "the quick brown fox" + "jumps over the lazy dog"
    assert_eq!(count.output, Some(json!({ "words": 9 })));
    assert_eq!(
        FIRST_TEXT.split_whitespace().count() + SECOND_TEXT.split_whitespace().count(),
        9
    );
    Ok(())
}
