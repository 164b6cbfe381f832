//! The file server: an environment registers a local file and gets a
//! `flint://host:port/files/<name>` URI; another environment asks for its size and
//! checksum, pulls its bytes as a bulk stream (flow-controlled chunks beside the
//! connection's other traffic), checks size and SHA-256 on arrival and only then moves
//! it into place. Used to ship application binaries.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::address::RpcAddress;
use crate::endpoint::{Ask, ConcurrentEndpoint, Context, Protocol, Reply};
use crate::env::RpcEnv;
use crate::error::RpcError;
use crate::stream::{StreamHandler, StreamSink};

/// Name of the built-in file server endpoint.
pub const FILE_SERVER: &str = "file-server";

#[derive(Debug, Clone)]
struct Registered {
    path: PathBuf,
    size: u64,
    modified: Option<SystemTime>,
    sha256: [u8; 32],
}

#[derive(Default)]
pub(crate) struct FileRegistry {
    files: Mutex<HashMap<String, Registered>>,
}

/// Size and checksum of a served or fetched file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Length in bytes.
    pub size: u64,
    /// SHA-256 of the contents.
    pub sha256: [u8; 32],
}

impl FileMeta {
    /// The checksum as lowercase hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FileMsg {
    Open(OpenFile),
}

impl Protocol for FileMsg {
    const NAME: &'static str = "flint.file-server/2";
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct OpenFile {
    name: String,
}
impl Ask for OpenFile {
    type Reply = FileMeta;
}
impl From<OpenFile> for FileMsg {
    fn from(v: OpenFile) -> Self {
        FileMsg::Open(v)
    }
}

fn file_error(e: impl std::fmt::Display) -> RpcError {
    RpcError::File(e.to_string())
}

async fn hash_file(path: &Path) -> std::io::Result<(u64, [u8; 32])> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, h.finalize().into()))
}

pub(crate) struct FileServerEndpoint;

impl FileServerEndpoint {
    /// The registration, if the file on disk still matches it.
    async fn current(env: &RpcEnv, name: &str) -> Result<Registered, String> {
        let reg = env
            .inner
            .files
            .files
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no file named {name:?} is registered at {}", env.describe()))?;
        let meta = tokio::fs::metadata(&reg.path).await.map_err(|e| {
            format!(
                "file {name:?} (registered from {}) cannot be read: {e}",
                reg.path.display()
            )
        })?;
        if meta.len() != reg.size || meta.modified().ok() != reg.modified {
            return Err(format!(
                "file {name:?} ({}) changed since it was registered ({} bytes then, {} now); register it again",
                reg.path.display(),
                reg.size,
                meta.len()
            ));
        }
        Ok(reg)
    }
}

impl ConcurrentEndpoint for FileServerEndpoint {
    type Msg = FileMsg;

    async fn handle(self: Arc<Self>, ctx: Context<FileMsg>, msg: FileMsg, reply: Option<Reply>) {
        let Some(reply) = reply else { return };
        let FileMsg::Open(o) = msg;
        match Self::current(ctx.env(), &o.name).await {
            Ok(r) => reply.typed(&o).send(FileMeta {
                size: r.size,
                sha256: r.sha256,
            }),
            Err(e) => reply.fail(e),
        }
    }
}

/// Serves the bytes of registered files as pull streams; the request is the name.
pub(crate) struct FileStreams {
    pub(crate) env: std::sync::Weak<crate::env::EnvInner>,
}

impl StreamHandler for FileStreams {
    fn pull(
        self: Arc<Self>,
        _from: RpcAddress,
        request: Bytes,
        mut sink: StreamSink,
    ) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(async move {
            let Some(inner) = self.env.upgrade() else {
                return sink.fail("the RPC environment has stopped");
            };
            let env = RpcEnv { inner };
            let name = String::from_utf8_lossy(&request).into_owned();
            let reg = match FileServerEndpoint::current(&env, &name).await {
                Ok(r) => r,
                Err(e) => return sink.fail(e),
            };
            let mut f = match tokio::fs::File::open(&reg.path).await {
                Ok(f) => f,
                Err(e) => return sink.fail(format!("cannot open {name:?}: {e}")),
            };
            let mut left = reg.size;
            let chunk = sink.chunk_size();
            while left > 0 {
                let n = (left as usize).min(chunk);
                let mut buf = vec![0u8; n];
                if let Err(e) = f.read_exact(&mut buf).await {
                    return sink.fail(format!("file {name:?} changed while being served: {e}"));
                }
                left -= n as u64;
                if sink.send(buf.into()).await.is_err() {
                    return;
                }
            }
            let _ = sink.finish().await;
        })
    }
}

/// Splits `flint://host:port/files/<name>` into address and name.
pub fn parse_file_uri(uri: &str) -> Result<(RpcAddress, String), RpcError> {
    let bad = || {
        file_error(format!(
            "{uri:?} is not a file URI (expected flint://host:port/files/<name>)"
        ))
    };
    let rest = uri.strip_prefix(crate::address::SCHEME).ok_or_else(bad)?;
    let (hp, name) = rest.split_once("/files/").ok_or_else(bad)?;
    if name.is_empty() || name.contains('/') {
        return Err(bad());
    }
    let addr: RpcAddress = format!("{}{hp}", crate::address::SCHEME).parse()?;
    Ok((addr, name.to_string()))
}

impl RpcEnv {
    /// Registers `path` with this environment's file server and returns its URI. The
    /// file is hashed now; if it later changes, fetching it fails with a clear error.
    pub async fn add_file(&self, path: &Path) -> Result<String, RpcError> {
        Ok(self.add_file_with_meta(path).await?.0)
    }

    /// [`add_file`](Self::add_file), also returning the size and SHA-256 it computed
    /// (what a fetcher will verify), so a caller that needs them does not hash again.
    pub async fn add_file_with_meta(&self, path: &Path) -> Result<(String, FileMeta), RpcError> {
        let addr = self
            .address()
            .ok_or(RpcError::ClientOnly("serving files"))?
            .clone();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| file_error(format!("{} has no usable file name", path.display())))?
            .to_string();
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|e| file_error(format!("cannot register {}: {e}", path.display())))?;
        if !meta.is_file() {
            return Err(file_error(format!(
                "cannot register {}: not a regular file",
                path.display()
            )));
        }
        let (size, sha256) = hash_file(path)
            .await
            .map_err(|e| file_error(format!("cannot read {}: {e}", path.display())))?;
        let canonical = tokio::fs::canonicalize(path)
            .await
            .unwrap_or_else(|_| path.to_path_buf());
        let mut files = self.inner.files.files.lock();
        if let Some(existing) = files.get(&name) {
            if existing.path != canonical {
                return Err(file_error(format!(
                    "a different file named {name:?} is already registered (from {})",
                    existing.path.display()
                )));
            }
        }
        files.insert(
            name.clone(),
            Registered {
                path: canonical,
                size,
                modified: meta.modified().ok(),
                sha256,
            },
        );
        Ok((format!("{addr}/files/{name}"), FileMeta { size, sha256 }))
    }

    /// Downloads the file at `uri` to `dest`, verifying size and SHA-256; `dest` only
    /// appears once the whole file has arrived intact. It writes at most the size the
    /// server announces; [`fetch_file_limited`](Self::fetch_file_limited) also bounds
    /// that.
    pub async fn fetch_file(&self, uri: &str, dest: &Path) -> Result<FileMeta, RpcError> {
        self.fetch_file_limited(uri, dest, u64::MAX).await
    }

    /// [`fetch_file`](Self::fetch_file), refusing before it writes anything a file
    /// the server announces as larger than `limit` bytes (a caller that knows the
    /// size it expects, and made room on disk for it).
    pub async fn fetch_file_limited(
        &self,
        uri: &str,
        dest: &Path,
        limit: u64,
    ) -> Result<FileMeta, RpcError> {
        let (addr, name) = parse_file_uri(uri)?;
        let server = self.endpoint_ref::<FileMsg>(&addr, FILE_SERVER);
        let meta = server
            .ask(OpenFile { name: name.clone() })
            .await
            .map_err(|e| file_error(format!("cannot fetch {uri}: {e}")))?;
        if meta.size > limit {
            return Err(file_error(format!(
                "cannot fetch {uri}: its server announces {} bytes, more than the {limit} bytes expected",
                meta.size
            )));
        }
        let tmp = dest.with_extension(format!("part-{}", std::process::id()));
        let result = async {
            let mut out = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| file_error(format!("cannot create {}: {e}", tmp.display())))?;
            let mut hasher = Sha256::new();
            let mut received = 0u64;
            let mut stream = self
                .pull_stream(&addr, FILE_SERVER, Bytes::from(name.clone().into_bytes()))
                .await
                .map_err(|e| file_error(format!("cannot fetch {uri}: {e}")))?;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| file_error(format!("fetching {uri} failed: {e}")))?;
                received += chunk.len() as u64;
                if received > meta.size {
                    return Err(file_error(format!(
                        "{uri} sent more than its announced {} bytes",
                        meta.size
                    )));
                }
                hasher.update(&chunk);
                out.write_all(&chunk)
                    .await
                    .map_err(|e| file_error(format!("cannot write {}: {e}", tmp.display())))?;
            }
            out.flush().await.map_err(file_error)?;
            let sha256: [u8; 32] = hasher.finalize().into();
            if received != meta.size || sha256 != meta.sha256 {
                return Err(file_error(format!(
                    "checksum mismatch fetching {uri}: expected {} bytes with sha256 {}, got {received} bytes with sha256 {} (did the file change while being served?)",
                    meta.size,
                    meta.sha256_hex(),
                    hex::encode(sha256)
                )));
            }
            tokio::fs::rename(&tmp, dest)
                .await
                .map_err(|e| file_error(format!("cannot move download into {}: {e}", dest.display())))?;
            Ok(meta.clone())
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn file_messages_round_trip(name in ".{0,40}",
                                    size in any::<u64>(), sha256 in any::<[u8; 32]>(),
                                    data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let rt = |m: &FileMsg| postcard::from_bytes::<FileMsg>(&postcard::to_stdvec(m).unwrap()).unwrap();
            let open = FileMsg::Open(OpenFile { name: name.clone() });
            prop_assert_eq!(format!("{:?}", rt(&open)), format!("{open:?}"));
            let meta = FileMeta { size, sha256 };
            prop_assert_eq!(postcard::from_bytes::<FileMeta>(&postcard::to_stdvec(&meta).unwrap()).unwrap(), meta);
            let chunk = Bytes::from(data);
            prop_assert_eq!(postcard::from_bytes::<Bytes>(&postcard::to_stdvec(&chunk).unwrap()).unwrap(), chunk);
        }
    }

    #[test]
    fn file_uris_parse() {
        let (a, n) = parse_file_uri("flint://127.0.0.1:9/files/app").unwrap();
        assert_eq!((a.port, n.as_str()), (9, "app"));
        for bad in [
            "flint://h:1/files/",
            "flint://h:1/x/app",
            "flint://h:1/files/a/b",
            "http://h:1/files/a",
        ] {
            assert!(parse_file_uri(bad).is_err(), "{bad}");
        }
    }
}
