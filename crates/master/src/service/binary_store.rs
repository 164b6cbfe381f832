//! The master's store of uploaded driver binaries: the `"BinaryStore"` endpoint
//! (answers [`LookupBinary`]) and the upload stream handler
//! ([`BINARY_UPLOAD_STREAM`]), around the pure [`BinaryStore`] bookkeeping.
//!
//! An upload is accepted only after the store reserved its declared size (bounded by
//! `master.binary_store.max_size`); its bytes go to a `part-…` file, at most the
//! declared size, hashed on the way; a size or SHA-256 mismatch fails it naming both
//! values. Intact, it is renamed to `<sha256>` in the store's directory (a temporary
//! directory of the master, removed when the master stops) and registered on the
//! master's file server, where workers fetch it by that hash into their binary cache.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use flint_proto::messages::{BinaryLookup, BinaryStoreMsg, LookupBinary};
use flint_rpc::{Context, Endpoint, IncomingStream, Reply, RpcAddress, RpcEnv, StreamHandler};
use parking_lot::Mutex;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::binaries::{BinaryStore, Lookup, StoreError};

/// A store's directory is `<temp dir>/flint-master-binaries-<pid>-<random>`.
const STORE_PREFIX: &str = "flint-master-binaries-";

/// The store's files and bookkeeping.
pub(crate) struct StoreShell {
    dir: tempfile::TempDir,
    /// `master.binary_store.max_size`.
    max: u64,
    inner: Mutex<Inner>,
    /// The master's env, to register stored binaries on its file server; taken
    /// away when the master stops (it holds this handler).
    env: Mutex<Option<RpcEnv>>,
}

struct Inner {
    store: BinaryStore,
    uris: std::collections::HashMap<String, String>,
    errors: std::collections::HashMap<String, String>,
    next_part: u64,
}

impl StoreShell {
    /// An empty store of at most `max` bytes in a new temporary directory.
    pub(crate) fn new(env: RpcEnv, max: u64) -> std::io::Result<Arc<StoreShell>> {
        let parent = std::env::temp_dir();
        let removed = flint_daemon::scratch::remove_stale(&parent, STORE_PREFIX);
        if removed > 0 {
            tracing::info!(
                "removed {removed} binary store(s) left in {} by masters that did not stop",
                parent.display()
            );
        }
        let dir = flint_daemon::scratch::create(&parent, STORE_PREFIX)?;
        Ok(Arc::new(StoreShell {
            dir,
            max,
            inner: Mutex::new(Inner {
                store: BinaryStore::new(max),
                uris: Default::default(),
                errors: Default::default(),
                next_part: 0,
            }),
            env: Mutex::new(Some(env)),
        }))
    }

    /// Drops the env and removes the stored binaries (the master is stopping; the
    /// env's handler table may keep this value, and with it the directory guard,
    /// until the process exits).
    pub(crate) fn close(&self) {
        self.env.lock().take();
        if let Err(e) = std::fs::remove_dir_all(self.dir.path()) {
            tracing::debug!(
                "cannot remove the binary store {}: {e}",
                self.dir.path().display()
            );
        }
    }

    /// A live driver runs the stored binary `sha256`: keep it until [`Self::unpin`];
    /// `false` when it is not stored here.
    pub(crate) fn pin(&self, sha256: &str) -> bool {
        self.inner.lock().store.pin(sha256)
    }

    /// A driver that ran `sha256` was removed.
    pub(crate) fn unpin(&self, sha256: &str) {
        self.inner.lock().store.unpin(sha256);
    }

    fn lookup(&self, sha256: &str) -> BinaryLookup {
        let mut inner = self.inner.lock();
        let state = inner.store.lookup(sha256);
        BinaryLookup {
            uri: match state {
                Lookup::Stored => inner.uris.get(sha256).cloned(),
                _ => None,
            },
            uploading: state == Lookup::Uploading,
            error: inner.errors.get(sha256).cloned(),
            uploads: inner.store.uploads(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    async fn receive(
        &self,
        meta: &[u8],
        mut stream: IncomingStream,
    ) -> Result<(), (String, String)> {
        let text = String::from_utf8_lossy(meta).into_owned();
        let (sha, size) = text
            .split_once(' ')
            .and_then(|(h, n)| Some((h.to_string(), n.parse::<u64>().ok()?)))
            .filter(|(h, _)| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| {
                (
                    String::new(),
                    format!(
                        "upload meta {:?} is not \"<sha256> <size>\"",
                        text.chars().take(80).collect::<String>()
                    ),
                )
            })?;
        let sha = sha.to_ascii_lowercase();
        let fail = |reason: String| (sha.clone(), reason);
        let part = {
            let mut inner = self.inner.lock();
            let evicted = inner
                .store
                .admit(&sha, size)
                .map_err(|e| fail(e.to_string()))?;
            for e in evicted {
                inner.uris.remove(&e);
                let _ = std::fs::remove_file(self.path(&e));
            }
            inner.errors.remove(&sha);
            inner.next_part += 1;
            self.path(&format!("part-{sha}-{}", inner.next_part))
        };
        let written = self.write(&part, size, &sha, &mut stream).await;
        let stored = match written {
            Ok(()) => {
                let dest = self.path(&sha);
                match std::fs::rename(&part, &dest) {
                    Ok(()) => Ok(dest),
                    Err(e) => Err(format!("cannot store binary {sha}: {e}")),
                }
            }
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(&part);
        let dest = match stored {
            Ok(d) => d,
            Err(e) => {
                self.inner.lock().store.abort(&sha);
                return Err(fail(e));
            }
        };
        let env = self.env.lock().clone();
        let uri = match env {
            Some(env) => env.add_file(&dest).await.map_err(|e| e.to_string()),
            None => Err("the master is stopping".to_string()),
        };
        let mut inner = self.inner.lock();
        match uri {
            Ok(uri) => {
                inner.store.complete(&sha);
                inner.uris.insert(sha.clone(), uri);
                tracing::info!(sha256 = %sha, size, "stored an uploaded driver binary");
                Ok(())
            }
            Err(e) => {
                inner.store.abort(&sha);
                let _ = std::fs::remove_file(&dest);
                Err(fail(format!("cannot serve binary {sha}: {e}")))
            }
        }
    }

    async fn write(
        &self,
        part: &std::path::Path,
        size: u64,
        sha: &str,
        stream: &mut IncomingStream,
    ) -> Result<(), String> {
        let mut file = tokio::fs::File::create(part)
            .await
            .map_err(|e| format!("cannot create {}: {e}", part.display()))?;
        let mut hasher = Sha256::new();
        let mut got = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk: Bytes = chunk.map_err(|e| format!("upload of {sha} broke off: {e}"))?;
            got += chunk.len() as u64;
            if got > size {
                return Err(format!(
                    "upload of {sha} sent more than the {size} bytes it announced"
                ));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
        }
        file.flush()
            .await
            .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
        if got != size {
            return Err(format!(
                "upload of {sha} ended after {got} of the {size} bytes it announced"
            ));
        }
        let actual: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if actual != sha {
            return Err(format!(
                "upload announced SHA-256 {sha} but its bytes hash to {actual}"
            ));
        }
        Ok(())
    }
}

/// Why [`StoreShell::store_body`] did not store a binary: the HTTP status that fits
/// and the reason.
#[derive(Debug)]
pub(crate) struct BodyRefused {
    /// `true`: the request was at fault (too large, broken off, shorter than
    /// announced); `false`: the master was (a file could not be written).
    pub(crate) client: bool,
    /// Whether the store has no room (HTTP 413 rather than 400).
    pub(crate) too_large: bool,
    /// What went wrong.
    pub(crate) reason: String,
}

impl StoreShell {
    /// Where a stored binary is served and how large it is; `None` when `sha256`
    /// is not stored (counts as a use of it, as a lookup does).
    pub(crate) fn source(&self, sha256: &str) -> Option<flint_proto::BinarySource> {
        let uri = self.lookup(sha256).uri?;
        let size = std::fs::metadata(self.path(sha256)).ok()?.len();
        Some(flint_proto::BinarySource {
            uri,
            sha256: sha256.to_string(),
            size,
        })
    }

    /// Stores the `size` bytes of an HTTP request body (the REST upload route),
    /// whose hash is learnt only at its end: the size is reserved under a
    /// provisional name first (so the store's bound holds while the bytes arrive),
    /// then moved to the hash. Returns the hash and whether the store held it
    /// already.
    pub(crate) async fn store_body(
        &self,
        size: u64,
        mut body: axum::body::Body,
    ) -> Result<(String, bool), BodyRefused> {
        use http_body_util::BodyExt as _;
        let refused = |client: bool, too_large: bool, reason: String| BodyRefused {
            client,
            too_large,
            reason,
        };
        let (provisional, part) = {
            let mut inner = self.inner.lock();
            inner.next_part += 1;
            let provisional = format!("http-upload-{}", inner.next_part);
            let evicted = inner
                .store
                .admit(&provisional, size)
                .map_err(|e| refused(true, true, e.to_string().replace(&provisional, "upload")))?;
            for e in evicted {
                inner.uris.remove(&e);
                let _ = std::fs::remove_file(self.path(&e));
            }
            let part = self.path(&format!("part-{provisional}"));
            (provisional, part)
        };
        let abort = |inner: &mut Inner| inner.store.abort(&provisional);
        let written: Result<String, BodyRefused> = async {
            let mut file = tokio::fs::File::create(&part).await.map_err(|e| {
                refused(
                    false,
                    false,
                    format!("cannot create {}: {e}", part.display()),
                )
            })?;
            let mut hasher = Sha256::new();
            let mut got = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame
                    .map_err(|e| refused(true, false, format!("the upload broke off: {e}")))?;
                let Ok(chunk) = frame.into_data() else {
                    continue;
                };
                got += chunk.len() as u64;
                if got > size {
                    return Err(refused(
                        true,
                        false,
                        format!("the upload sent more than the {size} bytes of its Content-Length"),
                    ));
                }
                hasher.update(&chunk);
                file.write_all(&chunk).await.map_err(|e| {
                    refused(
                        false,
                        false,
                        format!("cannot write {}: {e}", part.display()),
                    )
                })?;
            }
            file.flush().await.map_err(|e| {
                refused(
                    false,
                    false,
                    format!("cannot write {}: {e}", part.display()),
                )
            })?;
            if got != size {
                return Err(refused(
                    true,
                    false,
                    format!(
                        "the upload ended after {got} of the {size} bytes of its Content-Length"
                    ),
                ));
            }
            Ok(hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect())
        }
        .await;
        let sha = match written {
            Ok(sha) => sha,
            Err(e) => {
                abort(&mut self.inner.lock());
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
        };
        // From the provisional name to the hash.
        let dest = self.path(&sha);
        {
            let mut inner = self.inner.lock();
            abort(&mut inner);
            if inner.store.lookup(&sha) == Lookup::Stored {
                drop(inner);
                let _ = std::fs::remove_file(&part);
                return Ok((sha, true));
            }
            let admitted = inner.store.admit(&sha, size);
            let evicted = match admitted {
                Ok(ev) => ev,
                Err(e) => {
                    drop(inner);
                    let _ = std::fs::remove_file(&part);
                    return Err(refused(
                        true,
                        matches!(e, StoreError::TooLarge { .. } | StoreError::Full { .. }),
                        e.to_string(),
                    ));
                }
            };
            for e in evicted {
                inner.uris.remove(&e);
                let _ = std::fs::remove_file(self.path(&e));
            }
            if let Err(e) = std::fs::rename(&part, &dest) {
                inner.store.abort(&sha);
                drop(inner);
                let _ = std::fs::remove_file(&part);
                return Err(refused(
                    false,
                    false,
                    format!("cannot store binary {sha}: {e}"),
                ));
            }
        }
        let env = self.env.lock().clone();
        let uri = match env {
            Some(env) => env.add_file(&dest).await.map_err(|e| e.to_string()),
            None => Err("the master is stopping".to_string()),
        };
        let mut inner = self.inner.lock();
        match uri {
            Ok(uri) => {
                inner.store.complete(&sha);
                inner.uris.insert(sha.clone(), uri);
                inner.errors.remove(&sha);
                tracing::info!(sha256 = %sha, size, "stored a driver binary uploaded over REST");
                Ok((sha, false))
            }
            Err(e) => {
                inner.store.abort(&sha);
                let _ = std::fs::remove_file(&dest);
                Err(refused(
                    false,
                    false,
                    format!("cannot serve binary {sha}: {e}"),
                ))
            }
        }
    }

    /// The store's bound, `master.binary_store.max_size`.
    pub(crate) fn max_size(&self) -> u64 {
        self.max
    }
}

impl StreamHandler for StoreShell {
    fn push(
        self: Arc<Self>,
        from: RpcAddress,
        meta: Bytes,
        stream: IncomingStream,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>> {
        Box::pin(async move {
            if let Err((sha, reason)) = self.receive(&meta, stream).await {
                tracing::warn!(peer = %from, "binary upload refused: {reason}");
                if !sha.is_empty() {
                    self.inner.lock().errors.insert(sha, reason);
                }
            }
        })
    }
}

/// The `"BinaryStore"` endpoint.
pub(crate) struct StoreEndpoint {
    pub(crate) shell: Arc<StoreShell>,
}

impl Endpoint for StoreEndpoint {
    type Msg = BinaryStoreMsg;

    fn receive(&mut self, _ctx: &Context<BinaryStoreMsg>, _msg: BinaryStoreMsg) {
        tracing::debug!("a binary store message sent one-way; ignored");
    }

    fn receive_and_reply(
        &mut self,
        _ctx: &Context<BinaryStoreMsg>,
        msg: BinaryStoreMsg,
        reply: Reply,
    ) {
        match msg {
            BinaryStoreMsg::LookupBinary(q) => {
                let answer = self.shell.lookup(&q.sha256);
                reply.typed::<LookupBinary>(&q).send(answer);
            }
        }
    }
}
