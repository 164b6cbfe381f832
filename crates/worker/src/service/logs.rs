//! The worker's log service (`"WorkerLogs"`, protocol `flint.worker-logs/1`):
//! `flint logs` asks it for chunks of a driver's or an executor's `stdout` /
//! `stderr` ([`ReadLog`] → [`LogChunk`]), bounded per ask, and polls for more
//! while the child runs (`--follow`).
//!
//! Path safety: ids are checked as plain directory names (the same check the
//! runner makes before it creates a work directory: no `/`, `..`, NUL) and the
//! file's real path must lie under the worker's work directory (a symlink out of
//! it is refused). Reads run on a blocking thread, never on the endpoint's task.
//! The endpoint sits on the worker's own RPC environment, so it is behind the
//! cluster secret like everything else.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flint_proto::messages::{LogChunk, LogFile, LogSource, LogStart, ReadLog, WorkerLogMsg};
use flint_rpc::{Context, Endpoint, Reply};
use tracing::Instrument;

use super::shell::Shared;
use crate::runner;
use crate::state::ChildId;

/// The most bytes one [`ReadLog`] answers with.
pub const MAX_CHUNK: u32 = 1024 * 1024;
/// How far back `TailLines` looks for line starts.
const TAIL_WINDOW: u64 = 1024 * 1024;

/// The endpoint; see the module docs.
pub(crate) struct LogsEndpoint {
    pub(crate) shared: Arc<Shared>,
}

impl Endpoint for LogsEndpoint {
    type Msg = WorkerLogMsg;

    fn receive(&mut self, _ctx: &Context<WorkerLogMsg>, _msg: WorkerLogMsg) {
        let _g = self.shared.span.enter();
        tracing::debug!("ignoring a one-way message to the log service; ReadLog is an ask");
    }

    fn receive_and_reply(&mut self, _ctx: &Context<WorkerLogMsg>, msg: WorkerLogMsg, reply: Reply) {
        let WorkerLogMsg::ReadLog(req) = msg;
        let shared = self.shared.clone();
        let span = self.shared.span.clone();
        self.shared.spawn(
            async move {
                let work_dir = shared.info.work_dir.clone();
                let child = child_id(&req.source);
                let running = child.as_ref().is_some_and(|c| shared.child_active(c));
                let typed = reply.typed(&req);
                let answer = tokio::task::spawn_blocking(move || read(&work_dir, &req, running))
                    .await
                    .unwrap_or_else(|e| failed(format!("the read failed: {e}")));
                typed.send(answer);
            }
            .instrument(span),
        );
    }
}

fn child_id(source: &LogSource) -> Option<ChildId> {
    Some(match source {
        LogSource::Driver(driver_id) => ChildId::Driver {
            driver_id: driver_id.clone(),
        },
        LogSource::Executor(app_id, exec_id) => ChildId::Executor {
            app_id: app_id.clone(),
            exec_id: *exec_id,
        },
    })
}

fn failed(error: String) -> LogChunk {
    LogChunk {
        data: Vec::new(),
        offset: 0,
        size: 0,
        running: false,
        error: Some(error),
    }
}

/// The file a request names, checked to be under `work_dir`.
fn log_path(work_dir: &Path, source: &LogSource, file: LogFile) -> Result<PathBuf, String> {
    let dir = match source {
        LogSource::Driver(d) => runner::driver_work_dir(work_dir, d.as_str()),
        LogSource::Executor(a, e) => {
            runner::executor_work_dir(work_dir, a.as_str(), &e.to_string())
        }
    }
    .map_err(|e| e.to_string())?;
    let name = match file {
        LogFile::Stdout => runner::STDOUT_FILE,
        LogFile::Stderr => runner::STDERR_FILE,
    };
    let path = dir.join(name);
    let what = match source {
        LogSource::Driver(d) => format!("driver {d}"),
        LogSource::Executor(a, e) => format!("executor {a}/{e}"),
    };
    let real = path.canonicalize().map_err(|e| {
        format!(
            "no {name} for {what} on this worker ({}: {e})",
            path.display()
        )
    })?;
    let root = work_dir
        .canonicalize()
        .map_err(|e| format!("cannot resolve the work dir: {e}"))?;
    if !real.starts_with(&root) {
        return Err(format!(
            "{} is outside the worker's work dir; not served",
            path.display()
        ));
    }
    Ok(real)
}

/// Answers one request (blocking I/O).
fn read(work_dir: &Path, req: &ReadLog, running: bool) -> LogChunk {
    let path = match log_path(work_dir, &req.source, req.file) {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    match read_file(&path, req) {
        Ok(mut chunk) => {
            chunk.running = running;
            chunk
        }
        Err(e) => failed(format!("cannot read {}: {e}", path.display())),
    }
}

fn read_file(path: &Path, req: &ReadLog) -> std::io::Result<LogChunk> {
    let mut f = std::fs::File::open(path)?;
    let size = f.metadata()?.len();
    let offset = match req.start {
        LogStart::Offset(o) => o.min(size),
        LogStart::TailLines(n) => tail_start(&mut f, size, n)?,
    };
    let want = u64::from(req.max_bytes.clamp(1, MAX_CHUNK)).min(size - offset);
    f.seek(SeekFrom::Start(offset))?;
    let mut data = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
    f.take(want).read_to_end(&mut data)?;
    Ok(LogChunk {
        data,
        offset,
        size,
        running: false,
        error: None,
    })
}

/// The offset where the last `lines` lines start (looking back at most
/// [`TAIL_WINDOW`] bytes); a final newline does not start a line.
fn tail_start(f: &mut std::fs::File, size: u64, lines: u32) -> std::io::Result<u64> {
    let from = size.saturating_sub(TAIL_WINDOW);
    f.seek(SeekFrom::Start(from))?;
    let mut buf = Vec::new();
    f.take(size - from).read_to_end(&mut buf)?;
    let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
    let mut seen = 0u32;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen >= lines {
                return Ok(from + i as u64 + 1);
            }
        }
    }
    Ok(if lines == 0 { size } else { from })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flint_proto::{AppId, DriverId, ExecutorId};

    fn req(source: LogSource, start: LogStart) -> ReadLog {
        ReadLog {
            source,
            file: LogFile::Stdout,
            start,
            max_bytes: 4,
        }
    }

    #[test]
    fn reads_chunks_and_tails_and_refuses_paths_outside_the_work_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path();
        let id = DriverId::generate(1_700_000_000_000, 1);
        std::fs::create_dir_all(work.join(id.as_str())).unwrap();
        std::fs::write(work.join(id.as_str()).join("stdout"), "a\nbb\nccc\n").unwrap();
        let c = read(
            work,
            &req(LogSource::Driver(id.clone()), LogStart::Offset(0)),
            true,
        );
        assert_eq!(
            (c.data.as_slice(), c.offset, c.size, c.running),
            (&b"a\nbb"[..], 0, 9, true)
        );
        let c = read(
            work,
            &req(LogSource::Driver(id.clone()), LogStart::Offset(4)),
            false,
        );
        assert_eq!(c.data, b"\nccc");
        let c = read(
            work,
            &req(LogSource::Driver(id.clone()), LogStart::TailLines(2)),
            false,
        );
        assert_eq!((c.data.as_slice(), c.offset), (&b"bb\nc"[..], 2));
        let c = read(
            work,
            &req(LogSource::Driver(id.clone()), LogStart::TailLines(9)),
            false,
        );
        assert_eq!(c.offset, 0);

        // An unknown child: no file, named.
        let other = DriverId::generate(1_700_000_000_000, 2);
        let c = read(
            work,
            &req(LogSource::Driver(other.clone()), LogStart::Offset(0)),
            false,
        );
        let e = c.error.unwrap();
        assert!(e.contains(&format!("no stdout for driver {other}")), "{e}");

        // A symlink out of the work dir is not followed.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "x").unwrap();
        let app = AppId::generate(1_700_000_000_000, 3);
        let dir = work.join(app.as_str()).join("0");
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.join("stdout")).unwrap();
        let c = read(
            work,
            &req(LogSource::Executor(app, ExecutorId(0)), LogStart::Offset(0)),
            false,
        );
        assert!(c.error.unwrap().contains("outside the worker's work dir"));
    }
}
