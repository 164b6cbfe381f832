//! `flint status`: asks the master(s) for their status and prints it as tables (or
//! the JSON document with `--json`).

use std::fmt::Write as _;

use anyhow::{bail, Context as _};
use flint_proto::messages::{MasterMsg, RequestMasterState};
use flint_proto::status::MasterStatusJson;
use flint_rpc::{RpcAddress, RpcConf, RpcEnv};

use crate::settings::{self, CommonArgs};

/// Arguments of `flint status`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Without an id: the master's workers and applications. With a driver id (driver-…): its
newest attempt (a supervised driver the master relaunched elsewhere is followed to its
new id) as one line, `--json` for the document. With an application id (app-…): its
state, cores and executors, `--json` for the document.
Exit status: 0 answered; 1 unknown id, malformed id, or no master answered.")]
pub struct StatusArgs {
    /// The master(s), flint://host:port[,host2:port2].
    #[arg(long, env = "FLINT_MASTER")]
    pub master: String,
    /// A cluster-mode driver (`driver-…`) or an application (`app-…`): print its
    /// state instead.
    #[arg(value_name = "DRIVER_ID|APP_ID")]
    pub driver_id: Option<String>,
    /// Print the JSON status document instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Prints the status of the first master that answers as ALIVE (else the first that
/// answers at all).
pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    if let Some(id) = &args.driver_id {
        return crate::submit_driver::status(&args.master, id, args.json, &args.common).await;
    }
    let masters = RpcAddress::parse_list(&args.master)?;
    let conf = settings::load(&args.common, &crate::known_keys())?;
    let env = RpcEnv::client(RpcConf::from_conf(&conf)?)?;
    let mut answers = Vec::new();
    let mut errors = Vec::new();
    for m in &masters {
        let r = env.endpoint_ref::<MasterMsg>(m, "Master");
        match r.ask(RequestMasterState).await {
            Ok(s) => answers.push(s),
            Err(e) => errors.push(format!("cannot reach the master at {m}: {e}")),
        }
    }
    env.shutdown();
    let Some(status) = answers
        .iter()
        .find(|s| s.status == flint_proto::MasterStatus::Alive)
        .or(answers.first())
    else {
        match errors.as_slice() {
            [one] => bail!("{one}; is a master running there?"),
            _ => bail!("no master answered:\n  {}", errors.join("\n  ")),
        }
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(status).context("encoding the status")?
        );
    } else {
        print!("{}", render(status));
    }
    Ok(())
}

fn gib(mb: u64) -> String {
    format!("{:.1} GiB", mb as f64 / 1024.0)
}

/// The status as aligned text tables.
pub fn render(s: &MasterStatusJson) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Master {}  {}", s.url, s.status);
    let _ = writeln!(
        out,
        "Workers: {} alive; cores {} ({} used); memory {} ({} used)",
        s.alive_workers,
        s.cores,
        s.cores_used,
        gib(s.memory_mb),
        gib(s.memory_used_mb)
    );
    let mut rows = vec![["WORKER", "ADDRESS", "STATE", "CORES", "MEMORY"]
        .map(String::from)
        .to_vec()];
    for w in &s.workers {
        rows.push(vec![
            w.id.to_string(),
            format!("{}:{}", w.host, w.port),
            w.state.to_string(),
            format!("{}/{}", w.cores_used, w.cores),
            format!("{}/{} MiB", w.memory_used_mb, w.memory_mb),
        ]);
    }
    table(&mut out, &rows);
    for w in s.workers.iter().filter(|w| w.unhealthy.is_some()) {
        let _ = writeln!(
            out,
            "  unhealthy {}: {}",
            w.id,
            w.unhealthy.as_deref().unwrap_or_default()
        );
    }
    for (title, apps) in [
        ("Running applications", &s.active_apps),
        ("Completed applications", &s.completed_apps),
    ] {
        if apps.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{title}:");
        let mut rows = vec![["APP", "NAME", "STATE", "CORES", "EXECUTORS", "NOTE"]
            .map(String::from)
            .to_vec()];
        for a in apps {
            let running = a
                .executors
                .iter()
                .filter(|e| e.state == flint_proto::ExecutorState::Running)
                .count();
            rows.push(vec![
                a.id.to_string(),
                a.name.clone(),
                a.state.to_string(),
                a.cores.to_string(),
                format!("{running}/{}", a.executors.len()),
                a.waiting_reason.clone().unwrap_or_default(),
            ]);
        }
        table(&mut out, &rows);
    }
    out
}

fn table(out: &mut String, rows: &[Vec<String>]) {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
}
