//! Bulk streams over real TCP (sealed): pull and push deliver every byte in order; a
//! missing handler, a failing producer and a cancelling consumer are each reported
//! to the other side by name; files are fetched over streams.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use flint_rpc::{
    IncomingStream, RpcAddress, RpcConf, RpcEnv, Secret, StreamError, StreamHandler, StreamSink,
};
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

fn conf() -> RpcConf {
    let mut c = quick_conf();
    c.secret = Some(Secret::new("streams"));
    c.stream_chunk = 64 * 1024;
    c
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

/// Pull: produces `data(n)` where the request is `n` as text; "fail" fails after a
/// first chunk. Push: collects what arrives and hands it to the test.
struct Handler {
    pushed: tokio::sync::mpsc::UnboundedSender<Result<Vec<u8>, StreamError>>,
}

impl StreamHandler for Handler {
    fn pull(
        self: Arc<Self>,
        _from: RpcAddress,
        request: Bytes,
        mut sink: StreamSink,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let text = String::from_utf8_lossy(&request).into_owned();
            if text == "fail" {
                sink.send(Bytes::from(vec![1u8; 1000])).await.unwrap();
                return sink.fail("asked to fail");
            }
            let n: usize = text.parse().unwrap();
            let d = data(n);
            // Several sends of odd sizes, to cross chunk boundaries.
            for part in d.chunks(100_000) {
                if sink.send(Bytes::copy_from_slice(part)).await.is_err() {
                    return;
                }
            }
            sink.finish().await.unwrap();
        })
    }

    fn push(
        self: Arc<Self>,
        _from: RpcAddress,
        _meta: Bytes,
        mut stream: IncomingStream,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut got = Vec::new();
            while let Some(c) = stream.next().await {
                match c {
                    Ok(c) => got.extend_from_slice(&c),
                    Err(e) => {
                        let _ = self.pushed.send(Err(e));
                        return;
                    }
                }
            }
            let _ = self.pushed.send(Ok(got));
        })
    }
}

async fn setup() -> (
    RpcEnv,
    RpcAddress,
    tokio::sync::mpsc::UnboundedReceiver<Result<Vec<u8>, StreamError>>,
) {
    let server = RpcEnv::server(conf(), "127.0.0.1", 0).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    server
        .register_stream_handler("blocks", Arc::new(Handler { pushed: tx }))
        .unwrap();
    let addr = server.address().unwrap().clone();
    (server, addr, rx)
}

async fn collect(mut s: IncomingStream) -> Result<Vec<u8>, StreamError> {
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c?);
    }
    Ok(out)
}

#[tokio::test]
async fn pull_and_push_deliver_every_byte_in_order() {
    let (server, addr, mut pushed) = setup().await;
    let client = RpcEnv::client(conf()).unwrap();
    for n in [0usize, 1, 65_536, 1_000_001] {
        let s = client
            .pull_stream(&addr, "blocks", Bytes::from(n.to_string()))
            .await
            .unwrap();
        let got = collect(s).await.unwrap();
        assert_eq!(got.len(), n);
        assert!(got == data(n), "pulled bytes differ for n = {n}");
    }
    let mut sink = client
        .push_stream(&addr, "blocks", Bytes::from_static(b"meta"))
        .await
        .unwrap();
    let d = data(3_000_000);
    sink.send(Bytes::from(d.clone())).await.unwrap();
    sink.finish().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), pushed.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(Sha256::digest(&got), Sha256::digest(&d));
    // Nothing stays open.
    wait_until("streams to be closed", Duration::from_secs(5), || {
        client.connections().iter().all(|c| c.open_streams == 0)
    })
    .await;
    client.shutdown();
    server.shutdown();
}

#[tokio::test]
async fn failures_are_reported_to_the_other_side() {
    let (server, addr, _pushed) = setup().await;
    let client = RpcEnv::client(conf()).unwrap();
    // No such handler.
    let s = client
        .pull_stream(&addr, "nope", Bytes::new())
        .await
        .unwrap();
    let e = collect(s).await.unwrap_err();
    assert!(
        e.to_string().contains("no stream handler named \"nope\""),
        "{e}"
    );
    // A producer that fails half-way.
    let s = client
        .pull_stream(&addr, "blocks", Bytes::from_static(b"fail"))
        .await
        .unwrap();
    let e = collect(s).await.unwrap_err();
    assert!(e.to_string().contains("asked to fail"), "{e}");
    // A consumer that gives up: the producer's next send fails instead of blocking.
    let mut s = client
        .pull_stream(&addr, "blocks", Bytes::from((50usize << 20).to_string()))
        .await
        .unwrap();
    let first = s.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(s);
    wait_until(
        "the server to drop the cancelled stream",
        Duration::from_secs(10),
        || server.connections().iter().all(|c| c.open_streams == 0),
    )
    .await;
    // A push to a missing handler fails the producer.
    let mut sink = client
        .push_stream(&addr, "nope", Bytes::new())
        .await
        .unwrap();
    let e = tokio::time::timeout(
        Duration::from_secs(5),
        sink.send(Bytes::from(vec![0u8; 10])),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(e.to_string().contains("no stream handler"), "{e}");
    client.shutdown();
    server.shutdown();
}

#[tokio::test]
async fn a_file_is_fetched_over_a_stream_and_verified() {
    let server = RpcEnv::server(conf(), "127.0.0.1", 0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("app.bin");
    std::fs::write(&src, data(2_500_000)).unwrap();
    let uri = server.add_file(&src).await.unwrap();
    let client = RpcEnv::client(conf()).unwrap();
    let dest = dir.path().join("fetched");
    let meta = client.fetch_file(&uri, &dest).await.unwrap();
    assert_eq!(meta.size, 2_500_000);
    assert_eq!(std::fs::read(&dest).unwrap(), data(2_500_000));
    client.shutdown();
    server.shutdown();
}
