#![allow(clippy::unwrap_used)]
//! The test harness's NATS server is real: JetStream stores, delivers and acknowledges, and a
//! restart keeps the port and the stored messages.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use swarm_testkit::NatsServer;

#[tokio::test]
#[ignore = "needs nats-server: scripts/test.sh installs it and runs this"]
async fn a_real_nats_server_with_jetstream_comes_back_on_its_port() {
    let mut server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let stream = js
        .create_stream(stream::Config {
            name: "PROBE".into(),
            subjects: vec!["probe.>".into()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("one".into()),
            filter_subject: "probe.one".into(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(5),
            ..Default::default()
        })
        .await
        .unwrap();
    js.publish("probe.one", "hello".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let port = server.port();
    server.restart();
    assert_eq!(server.port(), port);
    // The client reconnects on its own; the message was stored on disk.
    let mut messages = consumer.messages().await.unwrap();
    let message = messages.next().await.unwrap().unwrap();
    assert_eq!(&message.payload[..], b"hello");
    message.ack().await.unwrap();
}
