//! The block server and fetcher over real RpcEnvs on 127.0.0.1: fetches within the
//! in-flight cap, failures as FetchFailed naming the server, refusal of requests
//! outside the layout, authentication, local reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use flint_rpc::{RpcConf, RpcEnv, Secret};
use flint_shuffle::{
    decode_block, BlockFetcher, BlockMeta, BlockRef, BlockRequest, BlockServer, FetchRequest,
    Layout, MapId, MapStatus, ShuffleConf, ShuffleWriter, BLOCK_SERVER,
};

const APP: &str = "app-20260101000000-0001";

fn rpc_conf(secret: &str) -> RpcConf {
    let mut c = RpcConf {
        secret: Some(Secret::new(secret.as_bytes())),
        ..RpcConf::default()
    };
    c.connect_timeout.duration = Duration::from_secs(5);
    c.ask_timeout.duration = Duration::from_secs(20);
    c
}

fn sconf(dirs: &[PathBuf]) -> ShuffleConf {
    ShuffleConf {
        local_dirs: dirs.to_vec(),
        ..ShuffleConf::default()
    }
}

/// Writes `maps` map outputs of `parts` partitions of (String, u64), each block about
/// `per_block` records of incompressible-ish keys.
fn write_outputs(dirs: &[PathBuf], maps: u32, parts: u32, per_block: usize) -> Vec<MapStatus> {
    let layout = Layout::new(dirs, APP).unwrap();
    let conf = sconf(dirs);
    (0..maps)
        .map(|m| {
            let partitioner = move |k: &String| k.len() as u32 % parts;
            let mut w = ShuffleWriter::new(
                &conf,
                &layout,
                MapId {
                    shuffle: 1,
                    map: m,
                    attempt: 0,
                },
                parts,
                &partitioner,
                None,
            )
            .unwrap();
            for p in 0..parts {
                for i in 0..per_block {
                    // Key length ≡ p (mod parts); contents vary so blocks do not shrink to nothing.
                    let mut k = format!(
                        "{:x}",
                        (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(m)
                    );
                    while k.len() as u32 % parts != p {
                        k.push('z');
                    }
                    w.insert(k, i as u64).unwrap();
                }
            }
            w.commit().unwrap()
        })
        .collect()
}

fn requests(
    addr: &flint_rpc::RpcAddress,
    statuses: &[MapStatus],
    start: u32,
    end: u32,
) -> Vec<FetchRequest> {
    statuses
        .iter()
        .enumerate()
        .map(|(m, s)| FetchRequest {
            address: addr.clone(),
            shuffle: 1,
            map: m as u32,
            start,
            blocks: s.blocks[start as usize..end as usize].to_vec(),
        })
        .collect()
}

async fn server(dirs: &[PathBuf], secret: &str) -> (RpcEnv, std::sync::Arc<BlockServer>) {
    let env = RpcEnv::server(rpc_conf(secret), "127.0.0.1", 0)
        .await
        .unwrap();
    let s = BlockServer::new(dirs.to_vec());
    s.register(&env).unwrap();
    (env, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_every_block_within_the_in_flight_cap() {
    let t = tempfile::tempdir().unwrap();
    let dirs = vec![t.path().join("a"), t.path().join("b")];
    let statuses = write_outputs(&dirs, 6, 4, 3000);
    let block = statuses[0].blocks[0].len;
    assert!(block > 20_000, "blocks of some size ({block})");
    let (env, srv) = server(&dirs, "s3cret").await;
    let addr = env.address().unwrap().clone();
    let client = RpcEnv::client(rpc_conf("s3cret")).unwrap();
    // Each request is two blocks; the cap fits about three requests.
    let cap = block * 6 + block / 2;
    let fconf = ShuffleConf {
        max_bytes_in_flight: cap,
        local_dirs: vec![t.path().join("elsewhere")],
        ..ShuffleConf::default()
    };
    let reqs = requests(&addr, &statuses, 1, 3);
    let mut f = BlockFetcher::start(
        &tokio::runtime::Handle::current(),
        &client,
        &fconf,
        APP,
        reqs,
    );
    let mut held = std::collections::VecDeque::new();
    let mut got = 0;
    let mut records = 0;
    while let Some(b) = f.next().await {
        let b = b.unwrap();
        assert!(!b.local);
        assert!(
            f.in_flight() <= cap,
            "{} in flight, cap {cap}",
            f.in_flight()
        );
        records += decode_block::<String, u64>(b.block, b.data.clone(), &b.meta)
            .unwrap()
            .inspect(|r| assert!(r.is_ok()))
            .count();
        got += 1;
        // Hold a few blocks unconsumed: they count against the cap.
        held.push_back(b);
        if held.len() > 2 {
            held.pop_front();
        }
    }
    drop(held);
    assert_eq!(got, 12);
    assert_eq!(records, 12 * 3000);
    let stats = f.stats();
    assert!(stats.max_in_flight <= cap, "{stats:?} cap {cap}");
    assert!(
        stats.max_in_flight >= 2 * block,
        "the cap was used: {stats:?}"
    );
    assert_eq!(stats.remote_blocks, 12);
    assert_eq!(f.in_flight(), 0);
    assert_eq!(srv.stats().blocks, 12);
    assert_eq!(srv.stats().requests, 6);
    env.shutdown();
    client.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_small_map_outputs_are_fetched_with_a_bounded_number_of_open_requests() {
    let t = tempfile::tempdir().unwrap();
    let dirs = vec![t.path().join("a")];
    let statuses = write_outputs(&dirs, 150, 2, 3);
    let (env, srv) = server(&dirs, "s").await;
    let addr = env.address().unwrap().clone();
    let client = RpcEnv::client(rpc_conf("s")).unwrap();
    let fconf = ShuffleConf {
        local_dirs: vec![t.path().join("elsewhere")],
        ..ShuffleConf::default()
    };
    let mut f = BlockFetcher::start(
        &tokio::runtime::Handle::current(),
        &client,
        &fconf,
        APP,
        requests(&addr, &statuses, 0, 2),
    );
    let mut n = 0;
    while let Some(b) = f.next().await {
        b.unwrap();
        n += 1;
    }
    assert_eq!(n, 300);
    let st = f.stats();
    assert!(
        st.max_requests_in_flight >= 1
            && st.max_requests_in_flight <= flint_shuffle::MAX_REQUESTS_IN_FLIGHT as u64,
        "{st:?}"
    );
    assert_eq!(srv.stats().requests, 150);
    env.shutdown();
    client.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_unreachable_server_is_a_fetch_failure_naming_it() {
    let t = tempfile::tempdir().unwrap();
    let dirs = vec![t.path().join("a")];
    let statuses = write_outputs(&dirs, 2, 2, 100);
    let (env, _srv) = server(&dirs, "s").await;
    let addr = env.address().unwrap().clone();
    let client = RpcEnv::client(rpc_conf("s")).unwrap();
    let fconf = ShuffleConf {
        local_dirs: vec![t.path().join("elsewhere")],
        ..ShuffleConf::default()
    };
    let rt = tokio::runtime::Handle::current();
    let mut f = BlockFetcher::start(&rt, &client, &fconf, APP, requests(&addr, &statuses, 0, 2));
    let mut n = 0;
    while let Some(b) = f.next().await {
        b.unwrap();
        n += 1;
    }
    assert_eq!(n, 4);
    env.shutdown();
    env.await_termination().await;
    let mut f = BlockFetcher::start(&rt, &client, &fconf, APP, requests(&addr, &statuses, 1, 2));
    let e = f.next().await.unwrap().unwrap_err();
    assert_eq!(e.address, addr.to_string());
    assert_eq!((e.shuffle, e.partition), (1, 1));
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    assert!(
        !e.reason.contains("no data for"),
        "the closed port fails the fetch: {e}"
    );
    assert!(f.next().await.unwrap().is_err());
    assert!(f.next().await.is_none());
    client.shutdown();
}

async fn ask_raw(
    client: &RpcEnv,
    addr: &flint_rpc::RpcAddress,
    req: &[u8],
) -> Result<Vec<u8>, String> {
    let mut s = client
        .pull_stream(addr, BLOCK_SERVER, Bytes::copy_from_slice(req))
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_outside_the_layout_are_refused_and_the_server_keeps_serving() {
    let t = tempfile::tempdir().unwrap();
    let dirs = vec![t.path().join("a")];
    let statuses = write_outputs(&dirs, 1, 2, 100);
    std::fs::write(t.path().join("secret.txt"), "do not serve").unwrap();
    let (env, srv) = server(&dirs, "s").await;
    let addr = env.address().unwrap().clone();
    let client = RpcEnv::client(rpc_conf("s")).unwrap();
    let req = |app: &str, map: u32, start: u32, end: u32| {
        postcard::to_stdvec(&BlockRequest {
            app: app.into(),
            shuffle: 1,
            map,
            start,
            end,
        })
        .unwrap()
    };
    for (bad, why) in [
        (req("../../..", 0, 0, 1), "application id"),
        (req("/etc", 0, 0, 1), "application id"),
        (req("..", 0, 0, 1), "application id"),
        (req(APP, 7, 0, 1), "no map output"),
        (req(APP, 0, 1, 5), "which has 2"),
        (req(APP, 0, 1, 1), "bad partition range"),
        (b"garbage".to_vec(), "not a shuffle block request"),
    ] {
        let e = ask_raw(&client, &addr, &bad).await.unwrap_err();
        assert!(e.contains(why), "{why}: {e}");
    }
    assert_eq!(srv.stats().failed, 7);
    // Removal through the server: bad ids refused, a shuffle's files gone.
    let e = flint_shuffle::remove_remote_shuffle(&client, &addr, "../x", 1)
        .await
        .unwrap_err();
    assert!(e.contains("application id"), "{e}");
    let ok = ask_raw(&client, &addr, &req(APP, 0, 0, 2)).await.unwrap();
    assert_eq!(
        ok.len() as u64 - 4 - u64::from(u32::from_le_bytes([ok[0], ok[1], ok[2], ok[3]])),
        statuses[0].total_bytes()
    );
    let layout = Layout::new(&dirs, APP).unwrap();
    assert!(layout.index_path(1, 0).exists());
    flint_shuffle::remove_remote_shuffle(&client, &addr, APP, 1)
        .await
        .unwrap();
    assert!(!layout.index_path(1, 0).exists());
    let e = ask_raw(&client, &addr, &req(APP, 0, 0, 2))
        .await
        .unwrap_err();
    assert!(e.contains("no map output"), "{e}");
    // A peer without the cluster secret cannot fetch at all.
    let stranger = RpcEnv::client(rpc_conf("wrong")).unwrap();
    let fconf = ShuffleConf {
        local_dirs: vec![t.path().join("x")],
        ..ShuffleConf::default()
    };
    let mut f = BlockFetcher::start(
        &tokio::runtime::Handle::current(),
        &stranger,
        &fconf,
        APP,
        requests(&addr, &statuses, 0, 1),
    );
    let e = f.next().await.unwrap().unwrap_err();
    assert_eq!(e.address, addr.to_string());
    // The refused handshake itself fails the fetch, not the idle timeout.
    assert!(!e.reason.contains("no data for"), "{e}");
    env.shutdown();
    client.shutdown();
    stranger.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_or_stale_blocks_are_fetch_failures_and_local_outputs_are_read_directly() {
    let t = tempfile::tempdir().unwrap();
    let dirs = vec![t.path().join("a")];
    let statuses = write_outputs(&dirs, 2, 2, 500);
    let (env, _srv) = server(&dirs, "s").await;
    let addr = env.address().unwrap().clone();
    let client = RpcEnv::client(rpc_conf("s")).unwrap();
    let rt = tokio::runtime::Handle::current();
    let elsewhere = ShuffleConf {
        local_dirs: vec![t.path().join("x")],
        ..ShuffleConf::default()
    };
    // Stale: the driver's record differs from the output on the server.
    let mut reqs = requests(&addr, &statuses, 0, 1);
    reqs.truncate(1);
    reqs[0].blocks[0] = BlockMeta {
        crc: reqs[0].blocks[0].crc ^ 1,
        ..reqs[0].blocks[0]
    };
    let mut f = BlockFetcher::start(&rt, &client, &elsewhere, APP, reqs);
    let e = f.next().await.unwrap().unwrap_err();
    assert!(e.reason.contains("differs"), "{e}");
    // Corrupt: one byte flipped on disk.
    let layout = Layout::new(&dirs, APP).unwrap();
    let data = layout.data_path(1, 1);
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[statuses[1].blocks[0].len as usize + 10] ^= 0x40;
    std::fs::write(&data, &bytes).unwrap();
    let mut f = BlockFetcher::start(
        &rt,
        &client,
        &elsewhere,
        APP,
        requests(&addr, &statuses, 0, 2),
    );
    let mut ok = 0;
    let mut failed = Vec::new();
    while let Some(r) = f.next().await {
        match r {
            Ok(_) => ok += 1,
            Err(e) => failed.push(e),
        }
    }
    assert_eq!(ok, 3, "map 0 both blocks, map 1 block 0");
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].map, failed[0].partition), (1, 1));
    assert!(failed[0].reason.contains("checksum"), "{}", failed[0]);
    // The server's own process (same host, same dirs) reads its files directly.
    let mut f = BlockFetcher::start(
        &rt,
        &env,
        &sconf(&dirs),
        APP,
        requests(&addr, &statuses, 0, 1),
    );
    while let Some(b) = f.next().await {
        let b = b.unwrap();
        assert!(b.local);
        assert_eq!(
            b.block,
            BlockRef {
                shuffle: 1,
                map: b.block.map,
                partition: 0
            }
        );
    }
    assert_eq!(f.stats().local_blocks, 2);
    assert_eq!(f.stats().remote_blocks, 0);
    env.shutdown();
    client.shutdown();
}

const SERVER_CHILD: &str = "SHUFFLE_RPC_SERVER_CHILD";

/// In the child: serve `dir` until stdin closes (the parent died) or SIGKILL.
async fn serve_in_child(dir: &str) {
    let (env, _srv) = server(&[PathBuf::from(dir)], "s").await;
    println!("\nADDR {}", env.address().unwrap());
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).unwrap_or(0) > 0 {}
    })
    .await
    .unwrap();
    env.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_process_killed_with_sigkill_is_a_fetch_failure_naming_it() {
    if let Ok(dir) = std::env::var(SERVER_CHILD) {
        return serve_in_child(&dir).await;
    }
    use std::io::BufRead;
    let t = tempfile::tempdir().unwrap();
    let dirs = vec![t.path().join("a")];
    let statuses = write_outputs(&dirs, 1, 2, 200);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "a_server_process_killed_with_sigkill_is_a_fetch_failure_naming_it",
            "--exact",
            "--nocapture",
        ])
        .env(SERVER_CHILD, &dirs[0])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: flint_rpc::RpcAddress = loop {
        let line = lines.next().expect("the child prints its address").unwrap();
        if let Some(i) = line.find("ADDR ") {
            break line[i + 5..].trim().parse().unwrap();
        }
    };
    let client = RpcEnv::client(rpc_conf("s")).unwrap();
    let fconf = ShuffleConf {
        local_dirs: vec![t.path().join("elsewhere")],
        ..ShuffleConf::default()
    };
    let rt = tokio::runtime::Handle::current();
    let mut f = BlockFetcher::start(&rt, &client, &fconf, APP, requests(&addr, &statuses, 0, 2));
    assert!(f.next().await.unwrap().is_ok());
    assert!(f.next().await.unwrap().is_ok());
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut f = BlockFetcher::start(&rt, &client, &fconf, APP, requests(&addr, &statuses, 0, 2));
    for p in 0..2 {
        let e = f.next().await.unwrap().unwrap_err();
        assert_eq!(
            (e.address.as_str(), e.map, e.partition),
            (addr.to_string().as_str(), 0, p)
        );
    }
    assert!(f.next().await.is_none());
    client.shutdown();
}
