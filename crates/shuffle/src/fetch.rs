//! The block fetcher of a reduce task (Spark's `ShuffleBlockFetcherIterator`): given
//! where each map output lives and what its blocks should be, it fetches them over
//! flint-rpc pull streams — which give way to control frames on the connection, so
//! fetching never holds up the executor's asks and heartbeats — with at most
//! `max_bytes_in_flight` bytes requested or received-but-unconsumed at once, and yields
//! each block once its length and checksum match. Blocks of map outputs on this host
//! whose files are visible under this process's local dirs are read directly.
//!
//! Any failure — the server unreachable or gone mid-stream, the output missing there,
//! the server's index differing from what the driver recorded, a checksum mismatch —
//! comes out as a [`FetchFailed`] naming the server, shuffle, map and partition, so
//! the scheduler can mark that map output lost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use flint_rpc::{RpcAddress, RpcEnv};
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::codec::BlockMeta;
use crate::conf::ShuffleConf;
use crate::error::FetchFailed;
use crate::layout::{BlockRef, Layout};
use crate::reader::{read_local_blocks, verify_block};
use crate::server::{BlockRequest, BLOCK_SERVER, MAX_RANGE};

/// Most requests one fetcher has open at once (whatever their size), so a reduce task
/// reading thousands of tiny map outputs does not open thousands of streams and files
/// at once.
pub const MAX_REQUESTS_IN_FLIGHT: usize = 64;

/// A contiguous range of blocks of one map output to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// The block server holding the map output (executor or shuffle service).
    pub address: RpcAddress,
    /// The shuffle.
    pub shuffle: u32,
    /// The map output.
    pub map: u32,
    /// The first reduce partition of the range.
    pub start: u32,
    /// What each block of the range should be, as the map task reported it.
    pub blocks: Vec<BlockMeta>,
}

impl FetchRequest {
    fn bytes(&self) -> u64 {
        self.blocks.iter().map(|b| b.len).sum()
    }

    fn failed(&self, address: &str, reason: impl Into<String>) -> FetchFailed {
        FetchFailed {
            address: address.to_string(),
            shuffle: self.shuffle,
            map: self.map,
            partition: self.start,
            reason: reason.into(),
        }
    }
}

/// A verified block. Its bytes count against `max_bytes_in_flight` until it is dropped.
#[derive(Debug)]
pub struct FetchedBlock {
    /// Which block.
    pub block: BlockRef,
    /// Its length, checksum and records.
    pub meta: BlockMeta,
    /// Its stored bytes (give them to [`crate::decode_block`]).
    pub data: Bytes,
    /// Whether it was read from a local file rather than fetched.
    pub local: bool,
    _held: Held,
}

/// Bytes in flight, shared by the fetch tasks and the blocks handed out.
struct InFlight {
    state: Mutex<(u64, u64)>,
    notify: Notify,
    max: u64,
}

impl InFlight {
    /// Waits until `n` more bytes fit (or nothing is in flight: one oversized request
    /// may go alone), then counts them.
    async fn acquire(self: &Arc<Self>, n: u64) -> Held {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.state.lock();
                if st.0 == 0 || st.0 + n <= self.max {
                    st.0 += n;
                    st.1 = st.1.max(st.0);
                    return Held {
                        bytes: n,
                        owner: self.clone(),
                    };
                }
            }
            notified.await;
        }
    }
}

struct Held {
    bytes: u64,
    owner: Arc<InFlight>,
}

impl Held {
    /// Splits `n` bytes off into their own holding.
    fn split(&mut self, n: u64) -> Held {
        let n = n.min(self.bytes);
        self.bytes -= n;
        Held {
            bytes: n,
            owner: self.owner.clone(),
        }
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes in flight", self.bytes)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.owner.state.lock().0 -= self.bytes;
            self.owner.notify.notify_waiters();
        }
    }
}

/// What a fetcher has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Most bytes ever in flight or held at once.
    pub max_in_flight: u64,
    /// Blocks fetched remotely.
    pub remote_blocks: u64,
    /// Blocks read from local files.
    pub local_blocks: u64,
    /// Bytes fetched remotely.
    pub remote_bytes: u64,
    /// Most requests open at once (at most [`MAX_REQUESTS_IN_FLIGHT`]).
    pub max_requests_in_flight: u64,
}

#[derive(Default)]
struct Counters {
    open_requests: AtomicU64,
    max_open_requests: AtomicU64,
    remote_blocks: AtomicU64,
    local_blocks: AtomicU64,
    remote_bytes: AtomicU64,
}

/// Fetches the blocks of a reduce task; dropping it cancels what is still running.
pub struct BlockFetcher {
    rx: mpsc::UnboundedReceiver<Result<FetchedBlock, FetchFailed>>,
    inflight: Arc<InFlight>,
    counters: Arc<Counters>,
    cancel: CancellationToken,
    outstanding: usize,
}

impl Drop for BlockFetcher {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

struct Ctx {
    env: RpcEnv,
    app: String,
    local: Option<Layout>,
    inflight: Arc<InFlight>,
    counters: Arc<Counters>,
    idle: Duration,
    cancel: CancellationToken,
}

impl BlockFetcher {
    /// Starts fetching `requests` of application `app` on `runtime` (call from any
    /// thread). Blocks come out in completion order; every block of every request
    /// comes out once, or its request's first block as a [`FetchFailed`].
    pub fn start(
        runtime: &tokio::runtime::Handle,
        env: &RpcEnv,
        conf: &ShuffleConf,
        app: &str,
        requests: Vec<FetchRequest>,
    ) -> BlockFetcher {
        let (tx, rx) = mpsc::unbounded_channel();
        let inflight = Arc::new(InFlight {
            state: Mutex::new((0, 0)),
            notify: Notify::new(),
            max: conf.max_bytes_in_flight.max(1),
        });
        let counters = Arc::new(Counters::default());
        let cancel = CancellationToken::new();
        let outstanding = requests.iter().map(|r| r.blocks.len().max(1)).sum();
        let ctx = Arc::new(Ctx {
            env: env.clone(),
            app: app.to_string(),
            local: Layout::new(&conf.local_dirs, app).ok(),
            inflight: inflight.clone(),
            counters: counters.clone(),
            idle: env.conf().ask_timeout.duration,
            cancel: cancel.clone(),
        });
        runtime.spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            let open = Arc::new(tokio::sync::Semaphore::new(MAX_REQUESTS_IN_FLIGHT));
            for req in requests {
                let slot = tokio::select! {
                    s = open.clone().acquire_owned() => match s {
                        Ok(s) => s,
                        Err(_) => return,
                    },
                    _ = ctx.cancel.cancelled() => return,
                };
                let held = tokio::select! {
                    h = ctx.inflight.acquire(req.bytes().min(ctx.inflight.max)) => h,
                    _ = ctx.cancel.cancelled() => return,
                };
                let now = ctx.counters.open_requests.fetch_add(1, Ordering::Relaxed) + 1;
                ctx.counters
                    .max_open_requests
                    .fetch_max(now, Ordering::Relaxed);
                let ctx = ctx.clone();
                let tx = tx.clone();
                tasks.spawn(async move {
                    tokio::select! {
                        _ = fetch_one(&ctx, req, held, &tx) => {}
                        _ = ctx.cancel.cancelled() => {}
                    }
                    ctx.counters.open_requests.fetch_sub(1, Ordering::Relaxed);
                    drop(slot);
                });
                // Reap finished tasks as we go so the set stays small.
                while tasks.try_join_next().is_some() {}
            }
            tokio::select! {
                _ = async { while tasks.join_next().await.is_some() {} } => {}
                _ = ctx.cancel.cancelled() => {}
            }
        });
        BlockFetcher {
            rx,
            inflight,
            counters,
            cancel,
            outstanding,
        }
    }

    /// The next block, `None` when all have come out.
    pub async fn next(&mut self) -> Option<Result<FetchedBlock, FetchFailed>> {
        if self.outstanding == 0 {
            return None;
        }
        let r = self.rx.recv().await?;
        self.outstanding -= 1;
        Some(r)
    }

    /// [`next`](Self::next) for a task thread (not a runtime thread).
    pub fn next_blocking(&mut self) -> Option<Result<FetchedBlock, FetchFailed>> {
        if self.outstanding == 0 {
            return None;
        }
        let r = self.rx.blocking_recv()?;
        self.outstanding -= 1;
        Some(r)
    }

    /// Counters so far.
    pub fn stats(&self) -> FetchStats {
        FetchStats {
            max_in_flight: self.inflight.state.lock().1,
            remote_blocks: self.counters.remote_blocks.load(Ordering::Relaxed),
            local_blocks: self.counters.local_blocks.load(Ordering::Relaxed),
            remote_bytes: self.counters.remote_bytes.load(Ordering::Relaxed),
            max_requests_in_flight: self.counters.max_open_requests.load(Ordering::Relaxed),
        }
    }

    /// Bytes in flight or held by blocks not yet dropped.
    pub fn in_flight(&self) -> u64 {
        self.inflight.state.lock().0
    }
}

type Tx = mpsc::UnboundedSender<Result<FetchedBlock, FetchFailed>>;

/// Hands out the blocks of `data` (the concatenated range), each with its share of the
/// holding.
fn hand_out(req: &FetchRequest, address: &str, data: Bytes, mut held: Held, local: bool, tx: &Tx) {
    let mut at = 0usize;
    for (i, meta) in req.blocks.iter().enumerate() {
        let block = BlockRef {
            shuffle: req.shuffle,
            map: req.map,
            partition: req.start + i as u32,
        };
        let bytes = data.slice(at..at + meta.len as usize);
        at += meta.len as usize;
        if let Err(e) = verify_block(block, &bytes, meta) {
            let _ = tx.send(Err(FetchFailed {
                address: address.to_string(),
                shuffle: req.shuffle,
                map: req.map,
                partition: block.partition,
                reason: e.to_string(),
            }));
            // The rest of the request's blocks are accounted as failed with it.
            for _ in i + 1..req.blocks.len() {
                let _ = tx.send(Err(req.failed(
                    address,
                    "an earlier block of the same map output was corrupt",
                )));
            }
            return;
        }
        let share = held.split(meta.len);
        let _ = tx.send(Ok(FetchedBlock {
            block,
            meta: *meta,
            data: bytes,
            local,
            _held: share,
        }));
    }
}

fn fail_all(req: &FetchRequest, address: &str, reason: String, tx: &Tx) {
    let n = req.blocks.len().max(1);
    for i in 0..n {
        let mut f = req.failed(address, reason.clone());
        f.partition = req.start + i as u32;
        let _ = tx.send(Err(f));
    }
}

async fn fetch_one(ctx: &Ctx, req: FetchRequest, held: Held, tx: &Tx) {
    let address = req.address.to_string();
    if req.blocks.is_empty() {
        return fail_all(&req, &address, "a fetch request without blocks".into(), tx);
    }
    if req.blocks.len() as u32 > MAX_RANGE {
        return fail_all(
            &req,
            &address,
            format!("more than {MAX_RANGE} blocks in one request"),
            tx,
        );
    }
    let total = req.bytes();
    if total == 0 {
        return hand_out(&req, &address, Bytes::new(), held, false, tx);
    }
    // This host's outputs: read the files when they are visible here and match.
    let this_process = ctx.env.address() == Some(&req.address);
    let this_host = ctx
        .env
        .address()
        .is_some_and(|a| a.host == req.address.host);
    if let (true, Some(layout)) = (this_host, &ctx.local) {
        let layout = layout.clone();
        let (s, m, start, end) = (
            req.shuffle,
            req.map,
            req.start,
            req.start + req.blocks.len() as u32,
        );
        let read =
            tokio::task::spawn_blocking(move || read_local_blocks(&layout, s, m, start, end)).await;
        match read {
            Ok(Ok((metas, data))) if metas == req.blocks => {
                ctx.counters
                    .local_blocks
                    .fetch_add(req.blocks.len() as u64, Ordering::Relaxed);
                return hand_out(&req, "local", data, held, true, tx);
            }
            Ok(Ok(_)) if this_process => {
                return fail_all(&req, &address, "the map output here differs from the one the driver recorded (a stale attempt)".into(), tx);
            }
            Ok(Err(e)) if this_process => return fail_all(&req, &address, e.to_string(), tx),
            _ => {}
        }
    }
    match fetch_remote(ctx, &req, total).await {
        Ok(data) => {
            ctx.counters
                .remote_blocks
                .fetch_add(req.blocks.len() as u64, Ordering::Relaxed);
            ctx.counters
                .remote_bytes
                .fetch_add(total, Ordering::Relaxed);
            hand_out(&req, &address, data, held, false, tx)
        }
        Err(reason) => fail_all(&req, &address, reason, tx),
    }
}

async fn fetch_remote(ctx: &Ctx, req: &FetchRequest, total: u64) -> Result<Bytes, String> {
    let request = BlockRequest {
        app: ctx.app.clone(),
        shuffle: req.shuffle,
        map: req.map,
        start: req.start,
        end: req.start + req.blocks.len() as u32,
    };
    let body = postcard::to_stdvec(&request).map_err(|e| e.to_string())?;
    let mut stream = ctx
        .env
        .pull_stream(&req.address, BLOCK_SERVER, Bytes::from(body))
        .await
        .map_err(|e| e.to_string())?;
    let mut header: Option<Vec<BlockMeta>> = None;
    let mut pending = BytesMut::new();
    let mut data = BytesMut::new();
    loop {
        let chunk = match tokio::time::timeout(ctx.idle, stream.next()).await {
            Err(_) => {
                return Err(format!(
                    "no data for {:?} (rpc.ask_timeout / network.timeout)",
                    ctx.idle
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(c))) => c,
        };
        if header.is_none() {
            pending.extend_from_slice(&chunk);
            if pending.len() < 4 {
                continue;
            }
            let n = u32::from_le_bytes([pending[0], pending[1], pending[2], pending[3]]) as usize;
            if n > 64 + MAX_RANGE as usize * 32 {
                return Err(format!("the server sent a header of {n} bytes"));
            }
            if pending.len() < 4 + n {
                continue;
            }
            let metas: Vec<BlockMeta> = postcard::from_bytes(&pending[4..4 + n])
                .map_err(|e| format!("the server sent a bad header: {e}"))?;
            if metas != req.blocks {
                return Err("the map output on the server differs from the one the driver recorded (a stale or recomputed attempt)".into());
            }
            header = Some(metas);
            data.reserve(total as usize);
            data.extend_from_slice(&pending[4 + n..]);
        } else {
            data.extend_from_slice(&chunk);
        }
        if data.len() as u64 > total {
            return Err(format!(
                "the server sent more than the {total} bytes asked for"
            ));
        }
    }
    if header.is_none() {
        return Err("the server ended the stream without a header".into());
    }
    if data.len() as u64 != total {
        return Err(format!(
            "the stream ended after {} of {total} bytes",
            data.len()
        ));
    }
    Ok(data.freeze())
}
