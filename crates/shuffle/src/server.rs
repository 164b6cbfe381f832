//! The block server: a flint-rpc stream handler ([`BLOCK_SERVER`]) serving blocks of
//! the map outputs under a set of local dirs — from an executor's RpcEnv (its own
//! output) or from the worker's (the shuffle service, Spark's `ExternalBlockHandler`),
//! to authenticated peers only (the RpcEnv's handshake).
//!
//! A request ([`BlockRequest`], postcard) names an application, a shuffle, a map
//! output and a contiguous range of reduce partitions. The response stream is a
//! header — `u32 LE` length, then the postcard-encoded `Vec<BlockMeta>` of the range as
//! the index on this server describes it — followed by the blocks' bytes in order. A
//! request naming ids outside the layout, a range past the output or a missing or
//! incomplete output fails the stream with a reason saying so; nothing outside the
//! layout can be named (the ids are numbers and a checked application id).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use flint_rpc::{RpcAddress, RpcEnv, RpcError, StreamHandler, StreamSink};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::codec::BlockMeta;
use crate::index;
use crate::layout::Layout;

/// Name of the block server's stream handler.
pub const BLOCK_SERVER: &str = "flint.shuffle-blocks/1";

/// Name of the stream handler that removes a shuffle's files (its request is a
/// postcard [`RemoveShuffle`]; the stream ends empty once they are gone).
pub const SHUFFLE_REMOVER: &str = "flint.shuffle-remove/1";

/// Asks a block server to remove every file of one shuffle of an application
/// (Spark's `RemoveShuffle` to the external shuffle service).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveShuffle {
    /// The application.
    pub app: String,
    /// The shuffle.
    pub shuffle: u32,
}

/// Largest range one request may name (keeps the header within one stream chunk).
pub const MAX_RANGE: u32 = 8192;

/// What a fetcher asks the block server for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRequest {
    /// The application.
    pub app: String,
    /// The shuffle.
    pub shuffle: u32,
    /// The map output.
    pub map: u32,
    /// First reduce partition.
    pub start: u32,
    /// One past the last reduce partition.
    pub end: u32,
}

/// What a block server has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStats {
    /// Requests served in full.
    pub requests: u64,
    /// Blocks served.
    pub blocks: u64,
    /// Block bytes served.
    pub bytes: u64,
    /// Requests refused or failed.
    pub failed: u64,
}

/// Serves blocks from local dirs.
pub struct BlockServer {
    local_dirs: Vec<PathBuf>,
    requests: AtomicU64,
    blocks: AtomicU64,
    bytes: AtomicU64,
    failed: AtomicU64,
}

impl BlockServer {
    /// A server of the map outputs under `local_dirs`.
    pub fn new(local_dirs: Vec<PathBuf>) -> Arc<BlockServer> {
        Arc::new(BlockServer {
            local_dirs,
            requests: AtomicU64::new(0),
            blocks: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    /// Registers the server on `env` under [`BLOCK_SERVER`], and its remover under
    /// [`SHUFFLE_REMOVER`].
    pub fn register(self: &Arc<Self>, env: &RpcEnv) -> Result<(), RpcError> {
        env.register_stream_handler(BLOCK_SERVER, self.clone())?;
        env.register_stream_handler(SHUFFLE_REMOVER, Arc::new(Remover(self.clone())))
    }

    /// The local dirs served.
    pub fn local_dirs(&self) -> &[PathBuf] {
        &self.local_dirs
    }

    /// Counters so far.
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            requests: self.requests.load(Ordering::Relaxed),
            blocks: self.blocks.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Checks a request and finds what to send: (data file, offset, metas).
    fn resolve(&self, req: &BlockRequest) -> Result<(PathBuf, u64, Vec<BlockMeta>), String> {
        let layout = Layout::new(&self.local_dirs, &req.app).map_err(|e| e.to_string())?;
        if req.start >= req.end || req.end - req.start > MAX_RANGE {
            return Err(format!(
                "bad partition range {}..{} (expected start < end, at most {MAX_RANGE} partitions)",
                req.start, req.end
            ));
        }
        let data = layout.data_path(req.shuffle, req.map);
        let out = index::read_map_output(&layout.index_path(req.shuffle, req.map), &data).map_err(
            |e| {
                format!(
                    "no map output for application {} shuffle {} map {} here: {e}",
                    req.app, req.shuffle, req.map
                )
            },
        )?;
        let n = out.blocks.len() as u32;
        if req.end > n {
            return Err(format!(
                "partitions {}..{} asked of shuffle {} map {}, which has {n}",
                req.start, req.end, req.shuffle, req.map
            ));
        }
        let metas = out.blocks[req.start as usize..req.end as usize].to_vec();
        Ok((data, out.offset(req.start), metas))
    }

    async fn serve(
        &self,
        from: &RpcAddress,
        request: &[u8],
        sink: &mut StreamSink,
    ) -> Result<(), String> {
        let req: BlockRequest = postcard::from_bytes(request)
            .map_err(|e| format!("not a shuffle block request ({e})"))?;
        let (data, offset, metas) = self.resolve(&req)?;
        tracing::debug!(%from, app = %req.app, shuffle = req.shuffle, map = req.map, start = req.start, end = req.end, "serving shuffle blocks");
        let header = postcard::to_stdvec(&metas).map_err(|e| e.to_string())?;
        let mut first = Vec::with_capacity(4 + header.len());
        first.extend_from_slice(&(header.len() as u32).to_le_bytes());
        first.extend_from_slice(&header);
        sink.send(Bytes::from(first))
            .await
            .map_err(|e| e.to_string())?;
        let mut left: u64 = metas.iter().map(|m| m.len).sum();
        let mut f = tokio::fs::File::open(&data)
            .await
            .map_err(|e| format!("cannot open {}: {e}", data.display()))?;
        f.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| format!("cannot seek in {}: {e}", data.display()))?;
        let chunk = sink.chunk_size();
        let total = left;
        while left > 0 {
            let n = (left as usize).min(chunk);
            let mut buf = vec![0u8; n];
            f.read_exact(&mut buf)
                .await
                .map_err(|e| format!("cannot read {}: {e}", data.display()))?;
            left -= n as u64;
            sink.send(Bytes::from(buf))
                .await
                .map_err(|e| e.to_string())?;
        }
        self.blocks.fetch_add(metas.len() as u64, Ordering::Relaxed);
        self.bytes.fetch_add(total, Ordering::Relaxed);
        Ok(())
    }
}

impl StreamHandler for BlockServer {
    fn pull(
        self: Arc<Self>,
        from: RpcAddress,
        request: Bytes,
        mut sink: StreamSink,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            match self.serve(&from, &request, &mut sink).await {
                Ok(()) => {
                    self.requests.fetch_add(1, Ordering::Relaxed);
                    let _ = sink.finish().await;
                }
                Err(reason) => {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%from, %reason, "shuffle block request refused");
                    sink.fail(&reason);
                }
            }
        })
    }
}

/// Serves [`RemoveShuffle`] requests for a [`BlockServer`].
struct Remover(Arc<BlockServer>);

impl StreamHandler for Remover {
    fn pull(
        self: Arc<Self>,
        from: RpcAddress,
        request: Bytes,
        sink: StreamSink,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let req: RemoveShuffle = match postcard::from_bytes(&request) {
                Ok(r) => r,
                Err(e) => return sink.fail(format!("not a remove-shuffle request ({e})")),
            };
            let dirs = self.0.local_dirs.clone();
            let done = tokio::task::spawn_blocking(move || {
                Layout::new(&dirs, &req.app).and_then(|l| l.remove_shuffle(req.shuffle))
            })
            .await;
            match done {
                Ok(Ok(())) => {
                    tracing::debug!(%from, "removed a shuffle");
                    let _ = sink.finish().await;
                }
                Ok(Err(e)) => sink.fail(e.to_string()),
                Err(e) => sink.fail(format!("removal failed: {e}")),
            }
        })
    }
}

/// Asks the block server at `addr` to remove shuffle `shuffle` of `app` (for map
/// output served by a worker's shuffle service; an executor's own output is removed
/// with [`Layout::remove_shuffle`]).
pub async fn remove_remote_shuffle(
    env: &RpcEnv,
    addr: &RpcAddress,
    app: &str,
    shuffle: u32,
) -> Result<(), String> {
    let body = postcard::to_stdvec(&RemoveShuffle {
        app: app.to_string(),
        shuffle,
    })
    .map_err(|e| e.to_string())?;
    let mut s = env
        .pull_stream(addr, SHUFFLE_REMOVER, Bytes::from(body))
        .await
        .map_err(|e| e.to_string())?;
    let wait = env.conf().ask_timeout.duration;
    loop {
        match tokio::time::timeout(wait, s.next()).await {
            Err(_) => {
                return Err(format!(
                    "no answer from {addr} within {wait:?} (rpc.ask_timeout)"
                ))
            }
            Ok(None) => return Ok(()),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(e.to_string()),
        }
    }
}
