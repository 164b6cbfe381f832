//! Benchmark of the launcher (bench/submit.sh runs it against a live cluster): starts
//! an application `reps` times through [`Launcher::start_application`] and prints one
//! JSON line with the times from the call to CONNECTED and to the final state.
//!
//! `launch_bench <flint> <master-url> <app> <reps> <client|cluster>`
#![allow(clippy::print_stdout)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flint_launcher::{AppHandle, DeployMode, Launcher, Listener, Redirect, State};

/// When the handle first reached CONNECTED.
#[derive(Default)]
struct Connected(Mutex<Option<Instant>>);

impl Listener for Connected {
    fn state_changed(&self, _h: &AppHandle, s: State) {
        if s == State::Connected {
            if let Ok(mut c) = self.0.lock() {
                c.get_or_insert_with(Instant::now);
            }
        }
    }
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [flint, master, app, reps, mode] = a.as_slice() else {
        return Err(
            "usage: launch_bench <flint> <master-url> <app> <reps> <client|cluster>".into(),
        );
    };
    let reps: usize = reps.parse()?;
    let mode = match mode.as_str() {
        "client" => DeployMode::Client,
        "cluster" => DeployMode::Cluster,
        other => return Err(format!("deploy mode {other:?}: use client or cluster").into()),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut to_connected, mut to_final) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let seen = Arc::new(Connected::default());
        let t0 = Instant::now();
        let h = Launcher::new()
            .flint_binary(flint)
            .master(master)
            .deploy_mode(mode)
            .app_binary(app)
            .redirect_output(Redirect::Null)
            .redirect_error(Redirect::Null)
            .start_application(vec![seen.clone()])?;
        let end = rt.block_on(h.wait_final(Duration::from_secs(120)));
        let done = t0.elapsed().as_secs_f64();
        if end != State::Finished {
            return Err(format!("the application ended {end}, not FINISHED").into());
        }
        let connected = seen
            .0
            .lock()
            .ok()
            .and_then(|c| *c)
            .ok_or("never CONNECTED")?;
        to_connected.push((connected - t0).as_secs_f64());
        to_final.push(done);
    }
    let round = |xs: &[f64]| {
        xs.iter()
            .map(|x| (x * 1e4).round() / 1e4)
            .collect::<Vec<_>>()
    };
    println!(
        "{{\"system\":\"flint\",\"row\":\"launcher {} start_application -> FINISHED\",\"reps\":{reps},\"secs\":{:?},\"median_s\":{:.4},\"to_connected_secs\":{:?},\"to_connected_median_s\":{:.4}}}",
        if mode == DeployMode::Cluster { "cluster" } else { "client" },
        round(&to_final),
        median(&mut to_final.clone()),
        round(&to_connected),
        median(&mut to_connected.clone()),
    );
    Ok(())
}
