//! The file server: register, fetch in chunks with the checksum verified, and clear
//! errors for a missing, changed or unknown file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use flint_rpc::{RpcEnv, RpcError};

fn pseudo_random(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn a_registered_file_arrives_intact_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("app-binary");
    let data = pseudo_random(3 * 1024 * 1024 + 12345);
    std::fs::write(&src, &data).unwrap();
    let server = server(quick_conf()).await;
    let uri = server.add_file(&src).await.unwrap();
    assert_eq!(
        uri,
        format!("{}/files/app-binary", server.address().unwrap())
    );
    let client = RpcEnv::client(quick_conf()).unwrap();
    let dest = dir.path().join("fetched");
    let meta = client.fetch_file(&uri, &dest).await.unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    // An empty file works too.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let uri = server.add_file(&empty).await.unwrap();
    let meta = client
        .fetch_file(&uri, &dir.path().join("empty-fetched"))
        .await
        .unwrap();
    assert_eq!(meta.size, 0);
    server.shutdown();
}

/// A file announced larger than the caller's limit is refused before anything is
/// written; one within it arrives.
#[tokio::test]
async fn a_file_larger_than_the_limit_is_refused_before_it_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.bin");
    std::fs::write(&src, pseudo_random(100_000)).unwrap();
    let server = server(quick_conf()).await;
    let uri = server.add_file(&src).await.unwrap();
    let client = RpcEnv::client(quick_conf()).unwrap();
    let fetched = dir.path().join("fetched");
    std::fs::create_dir(&fetched).unwrap();
    let dest = fetched.join("big.bin");
    let e = client
        .fetch_file_limited(&uri, &dest, 99_999)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("100000 bytes") && text.contains("99999 bytes expected"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_dir(&fetched).unwrap().count(),
        0,
        "something was written"
    );
    let meta = client
        .fetch_file_limited(&uri, &dest, 100_000)
        .await
        .unwrap();
    assert_eq!(meta.size, 100_000);
    server.shutdown();
}

#[tokio::test]
async fn changed_missing_and_unknown_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("data.bin");
    std::fs::write(&src, pseudo_random(10_000)).unwrap();
    let server = server(quick_conf()).await;
    let uri = server.add_file(&src).await.unwrap();
    let client = RpcEnv::client(quick_conf()).unwrap();
    let dest = dir.path().join("out.bin");

    std::fs::write(&src, pseudo_random(20_000)).unwrap();
    let e = client.fetch_file(&uri, &dest).await.unwrap_err();
    assert!(
        e.to_string().contains("changed since it was registered"),
        "{e}"
    );
    assert!(
        !dest.exists(),
        "no partial file may be left at the destination"
    );

    std::fs::remove_file(&src).unwrap();
    let e = client.fetch_file(&uri, &dest).await.unwrap_err();
    assert!(e.to_string().contains("cannot be read"), "{e}");

    let unknown = format!("{}/files/nope", server.address().unwrap());
    let e = client.fetch_file(&unknown, &dest).await.unwrap_err();
    assert!(e.to_string().contains("no file named \"nope\""), "{e}");

    let e = client
        .fetch_file("http://x/files/y", &dest)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a file URI"), "{e}");

    let e = server
        .add_file(&dir.path().join("absent"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("absent"), "{e}");
    let e = client.add_file(&dest).await.unwrap_err();
    assert!(matches!(e, RpcError::ClientOnly(_)), "{e}");
    server.shutdown();
}
