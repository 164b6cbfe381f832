//! The console progress bar: a program whose stage runs for over a second, run under a
//! pseudo-terminal (util-linux `script`, so stderr is a TTY) draws Spark's
//! `[Stage N:====>   (a + b) / 8]`; the same program with stderr a pipe draws
//! nothing. The program is this test binary again, running the ignored test
//! `child_program`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flint::prelude::*;

const CHILD: &str = "PROGRESS_TTY_CHILD";
const LIMIT: Duration = Duration::from_secs(60);

/// Runs on `local[2]`: one stage of 8 tasks of 250 ms each (about a second on 2
/// threads, over the bar's 500 ms delay), then prints its count.
#[test]
#[ignore = "run by the tests below as a child process"]
fn child_program() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let ctx = Context::builder()
        .app_name("progress")
        .master("local[2]")
        .conf("ui.enabled", "false")
        .create()
        .unwrap();
    let n = ctx
        .range(0, 8, 8)
        .map(|x| {
            // The work the bar reports on.
            std::thread::sleep(Duration::from_millis(250));
            x
        })
        .count()
        .unwrap();
    println!("counted {n}");
    ctx.stop().unwrap();
}

fn child_args() -> Vec<String> {
    [
        "--ignored",
        "--exact",
        "child_program",
        "--nocapture",
        "--test-threads",
        "1",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Runs `cmd` to its end within [`LIMIT`]; (stdout, stderr).
fn run(mut cmd: Command) -> (String, String) {
    let child = cmd
        .env(CHILD, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let started = Instant::now();
    let out = rx.recv_timeout(LIMIT).unwrap_or_else(|_| {
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        panic!("child {pid} did not end within {LIMIT:?}");
    });
    let out = out.unwrap();
    assert!(
        out.status.success(),
        "child failed after {:?}: {:?}\nstdout:\n{}\nstderr:\n{}",
        started.elapsed(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[test]
fn on_a_tty_the_stage_bar_is_drawn() {
    if Command::new("script").arg("--version").output().is_err() {
        panic!("util-linux `script` is needed to run a program under a pseudo-terminal");
    }
    let me = std::env::current_exe().unwrap();
    let line = std::iter::once(me.display().to_string())
        .chain(child_args())
        .map(|a| shell_quote(&a))
        .collect::<Vec<_>>()
        .join(" ");
    // -q: no banner; -e: the child's exit status; -c: the command; the typescript
    // file is /dev/null (what the terminal showed comes out on script's stdout).
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-e", "-c", &line, "/dev/null"])
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR");
    let (tty, _) = run(cmd);
    assert!(tty.contains("counted 8"), "{tty:?}");
    // Every frame drawn is `[Stage N:====>     (a + b) / 8]`: complete + active of 8.
    let frames: Vec<&str> = tty
        .split(['\r', '\n'])
        .filter(|l| l.contains("[Stage "))
        .collect();
    assert!(!frames.is_empty(), "no stage bar on the terminal: {tty:?}");
    for bar in &frames {
        let counts = bar
            .rsplit_once('(')
            .and_then(|(_, r)| r.split_once(") / 8]"))
            .map(|(c, _)| c.to_owned())
            .unwrap_or_else(|| panic!("not a bar of 8 tasks: {bar:?}"));
        let (done, active) = counts
            .split_once(" + ")
            .unwrap_or_else(|| panic!("{bar:?}"));
        let num = |s: &str| -> u32 {
            s.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{s:?} in the bar {bar:?}"))
        };
        let (done, active) = (num(done), num(active));
        assert!(done <= 8 && active <= 2 && done + active <= 8, "{bar:?}");
    }
    let bar = frames[frames.len() - 1];
    println!("on a TTY: {bar:?}");
}

#[test]
fn without_a_tty_nothing_is_drawn() {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(child_args());
    let (out, err) = run(cmd);
    assert!(out.contains("counted 8"), "{out}");
    assert!(
        !out.contains("[Stage") && !err.contains("[Stage"),
        "a bar without a terminal:\nstdout:\n{out}\nstderr:\n{err}"
    );
}
