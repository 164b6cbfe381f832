//! The master's store of uploaded driver binaries over real RPC on 127.0.0.1: an
//! intact upload is stored and served by hash, a lying or oversized one is refused
//! with the reason and leaves nothing stored, and the store stays within
//! `master.binary_store.max_size`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use flint_conf::Conf;
use flint_master::{start, MasterHandle, MasterOptions};
use flint_proto::messages::{
    BinaryLookup, BinaryStoreMsg, LookupBinary, BINARY_STORE_ENDPOINT, BINARY_UPLOAD_STREAM,
};
use flint_rpc::{RpcConf, RpcEnv};
use sha2::{Digest as _, Sha256};

fn conf() -> Conf {
    Conf::new()
        .set("auth.secret", "flint-master-binary-store-tests")
        .set("master.binary_store.max_size", "64k")
}

async fn master() -> MasterHandle {
    start(MasterOptions {
        host: "127.0.0.1".into(),
        port: 0,
        webui_port: 0,
        conf: conf(),
    })
    .await
    .expect("master starts")
}

fn client() -> RpcEnv {
    RpcEnv::client(RpcConf::from_conf(&conf()).unwrap()).unwrap()
}

fn sha(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn lookup(env: &RpcEnv, m: &MasterHandle, sha256: &str) -> BinaryLookup {
    env.endpoint_ref::<BinaryStoreMsg>(m.rpc_address(), BINARY_STORE_ENDPOINT)
        .ask(LookupBinary {
            sha256: sha256.to_string(),
        })
        .await
        .unwrap()
}

/// Pushes `data`; an upload the store refuses up front is cancelled by it.
async fn try_push(
    env: &RpcEnv,
    m: &MasterHandle,
    meta: String,
    data: &[u8],
) -> Result<(), flint_rpc::StreamError> {
    let mut sink = env
        .push_stream(m.rpc_address(), BINARY_UPLOAD_STREAM, Bytes::from(meta))
        .await
        .unwrap();
    sink.send(Bytes::copy_from_slice(data)).await?;
    sink.finish().await
}

async fn push(env: &RpcEnv, m: &MasterHandle, meta: String, data: &[u8]) {
    try_push(env, m, meta, data).await.unwrap();
}

/// Polls until the store no longer shows `sha256` uploading and has an answer.
async fn settled(env: &RpcEnv, m: &MasterHandle, sha256: &str) -> BinaryLookup {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = lookup(env, m, sha256).await;
        if a.uri.is_some() || a.error.is_some() {
            return a;
        }
        assert!(Instant::now() < deadline, "no outcome for {sha256}: {a:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn intact_uploads_are_stored_lying_ones_refused_and_the_bound_holds() {
    let m = master().await;
    let env = client();
    let good = b"#!/bin/sh\necho good\n".to_vec();
    let h = sha(&good);
    assert_eq!(lookup(&env, &m, &h).await.uri, None);
    push(&env, &m, format!("{h} {}", good.len()), &good).await;
    let a = settled(&env, &m, &h).await;
    let uri = a.uri.clone().expect("stored");
    assert_eq!(a.uploads, 1);
    // Workers fetch it by hash from the master's file server, intact.
    let dest = tempfile::tempdir().unwrap();
    let got = env.fetch_file(&uri, &dest.path().join("b")).await.unwrap();
    assert_eq!(got.sha256_hex(), h);

    // Bytes that do not hash to what was announced.
    let claimed = sha(b"something else");
    push(&env, &m, format!("{claimed} {}", good.len()), &good).await;
    let a = settled(&env, &m, &claimed).await;
    assert_eq!(a.uri, None);
    let e = a.error.unwrap();
    assert!(e.contains(&claimed) && e.contains(&h), "{e}");

    // Larger than the store.
    let big = vec![7u8; 65 * 1024];
    let hb = sha(&big);
    let _refused_up_front = try_push(&env, &m, format!("{hb} {}", big.len()), &big).await;
    let e = settled(&env, &m, &hb).await.error.unwrap();
    assert!(e.contains("master.binary_store.max_size"), "{e}");

    // Two 40k binaries do not fit 64k together: the older one is evicted.
    let a40 = vec![1u8; 40 * 1024];
    let b40 = vec![2u8; 40 * 1024];
    push(&env, &m, format!("{} {}", sha(&a40), a40.len()), &a40).await;
    assert!(settled(&env, &m, &sha(&a40)).await.uri.is_some());
    push(&env, &m, format!("{} {}", sha(&b40), b40.len()), &b40).await;
    assert!(settled(&env, &m, &sha(&b40)).await.uri.is_some());
    let a = lookup(&env, &m, &sha(&a40)).await;
    assert_eq!(
        (a.uri, a.uploads),
        (None, 3),
        "the older binary was evicted"
    );
    // The master still answers.
    assert!(m.status().url.starts_with("flint://"));
    env.shutdown();
    m.shutdown();
    m.wait().await;
}

/// A binary a live (here: waiting, no worker) driver references is never evicted: an
/// upload that would need its room is refused naming live drivers; once the driver is
/// killed (removed) the same upload is stored and the old binary goes.
#[tokio::test]
async fn a_live_drivers_binary_is_pinned_until_the_driver_ends() {
    use flint_proto::messages::{MasterMsg, RequestKillDriver, RequestSubmitDriver};
    use flint_proto::{BinarySource, DriverDescription, ExecutorCommand};
    let m = master().await;
    let env = client();
    let a40 = vec![3u8; 40 * 1024];
    let ha = sha(&a40);
    push(&env, &m, format!("{ha} {}", a40.len()), &a40).await;
    let uri = settled(&env, &m, &ha).await.uri.expect("stored");
    let mut cmd = ExecutorCommand::new("{{BINARY}}");
    cmd.binary = Some(BinarySource {
        uri: uri.clone(),
        sha256: ha.clone(),
        size: a40.len() as u64,
    });
    let master =
        env.endpoint_ref::<MasterMsg>(m.rpc_address(), flint_proto::messages::MASTER_ENDPOINT);
    let submitted = master
        .ask(RequestSubmitDriver {
            desc: DriverDescription::new(uri, cmd),
        })
        .await
        .unwrap();
    assert!(submitted.success, "{}", submitted.message);
    let driver_id = submitted.driver_id.unwrap();

    // Another 40k binary needs the pinned one's room: refused, the first one kept.
    let b40 = vec![4u8; 40 * 1024];
    let hb = sha(&b40);
    let _refused = try_push(&env, &m, format!("{hb} {}", b40.len()), &b40).await;
    let e = settled(&env, &m, &hb).await.error.expect("refused");
    assert!(e.contains("live drivers"), "{e}");
    assert!(
        lookup(&env, &m, &ha).await.uri.is_some(),
        "the live driver's binary stays"
    );

    // The driver ends: its binary may go now.
    let k = master.ask(RequestKillDriver { driver_id }).await.unwrap();
    assert!(k.success, "{}", k.message);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = try_push(&env, &m, format!("{hb} {}", b40.len()), &b40).await;
        if settled(&env, &m, &hb).await.uri.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the upload was never admitted after the kill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        lookup(&env, &m, &ha).await.uri,
        None,
        "the unpinned binary was evicted"
    );
    env.shutdown();
    m.shutdown();
    m.wait().await;
}
