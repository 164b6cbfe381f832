//! Scratch directories that outlive a killed process: each is created as
//! `<parent>/<prefix><pid>-<random>`, and at start-up a process removes the ones
//! under the same prefix whose pid is gone (a process killed with SIGKILL cannot
//! remove its own). A directory whose pid is alive — or reused by another process —
//! is left alone.

use std::path::Path;

/// A new scratch directory `<parent>/<prefix><pid>-<random>`, removed when dropped.
pub fn create(parent: &Path, prefix: &str) -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{prefix}{}-", std::process::id()))
        .tempdir_in(parent)
}

/// Removes the scratch directories under `parent` named `<prefix><pid>-…` whose
/// process is gone; returns how many.
pub fn remove_stale(parent: &Path, prefix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match std::fs::remove_dir_all(e.path()) {
            Ok(()) => removed += 1,
            Err(err) => tracing::debug!("cannot remove {}: {err}", e.path().display()),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const P: &str = "flint-test-scratch-";

    #[test]
    fn directories_of_dead_processes_are_removed_and_live_or_foreign_ones_kept() {
        let parent = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let mut live = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let p = parent.path();
        let dead_dir = p.join(format!("{P}{dead}-abc"));
        let live_dir = p.join(format!("{P}{}-def", live.id()));
        let foreign = p.join(format!("{P}notapid"));
        let other = p.join(format!("other-{dead}-x"));
        for d in [&dead_dir, &live_dir, &foreign, &other] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(dead_dir.join("bin"), b"x").unwrap();
        let mine = create(p, P).unwrap();
        assert_eq!(remove_stale(p, P), 1);
        assert!(!dead_dir.exists());
        for d in [&live_dir, &foreign, &other, &mine.path().to_path_buf()] {
            assert!(d.exists(), "{}", d.display());
        }
        let _ = live.kill();
        let _ = live.wait();
        assert_eq!(remove_stale(p, P), 1);
        assert!(!live_dir.exists());
    }
}
