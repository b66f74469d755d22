//! Hosts the word counter of the `custom_agent` example in this process, for a swarm reached
//! through NATS, until Ctrl-C; then finishes what runs and leaves.
//!
//! ```sh
//! nats-server -js &
//! swarm serve --nats nats://127.0.0.1:4222 &
//! cargo run -p swarm-examples --example remote_worker -- nats://127.0.0.1:4222
//! ```

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "nats://127.0.0.1:4222".to_owned());
    let worker = swarm_examples::remote_worker::start(&url, "swarm").await?;
    println!(
        "announcing {} through {url} ...",
        swarm_examples::remote_worker::AGENT_NAME
    );
    for (name, id) in worker.announced().await? {
        println!("{name} joined the swarm as {id}; Ctrl-C stops it");
    }
    tokio::signal::ctrl_c().await?;
    println!("finishing what runs, then leaving");
    worker.shutdown(true).await;
    Ok(())
}
