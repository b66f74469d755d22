//! Runs an objective on a custom agent kind plugged in at run time, and prints its tasks.
//!
//! `cargo run -p swarm-examples --example custom_agent`

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let view = swarm_examples::run().await?;
    println!("objective {} ({}): {:?}", view.id, view.goal, view.status);
    for task in &view.tasks {
        let output = task
            .output
            .as_ref()
            .map_or_else(|| "-".to_owned(), ToString::to_string);
        println!("  {:<14} {:<10?} {output}", task.key.as_str(), task.status);
    }
    Ok(())
}
