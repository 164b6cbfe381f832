//! A master or a worker as its own process, from the flint-master and flint-worker
//! libraries, for flint's tests of a separately started cluster (the `flint` binary
//! is not available to this crate's tests). Prints `url <flint://…> status <http://…>` once
//! serving (the status document's URL) and
//! runs until its stdin closes (the test that started it ended) or SIGTERM/SIGINT.
//!
//! `cluster_daemon master` · `cluster_daemon worker <master url> <work dir> <cores> <MiB> [host]`
//! (the worker binds and advertises `host`, default 127.0.0.1: tests give workers other
//! loopback addresses, 127.0.0.2 and up, to stand for separate machines).
//! The secret is the default file under `$FLINT_HOME` (the master creates it).

use std::io::Read as _;

use anyhow::{bail, Context as _};
use flint_conf::Conf;

fn conf() -> anyhow::Result<Conf> {
    let vars = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    Ok(flint_conf::load(None, vars, std::iter::empty::<&str>())?.conf)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Runtime::new()?;
    let (stdin_tx, stdin_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = stdin_tx.send(());
    });
    rt.block_on(async move {
        let conf = conf()?;
        let until_done = async {
            tokio::select! {
                _ = stdin_rx => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        match args.first().map(String::as_str) {
            Some("master") => {
                flint_rpc::secret::find_or_create(&conf).context("the cluster secret")?;
                let m = flint_master::start(flint_master::MasterOptions {
                    host: "127.0.0.1".into(),
                    port: 0,
                    webui_port: 0,
                    conf,
                })
                .await?;
                println!("url {} status {}/api/v1/status", m.rpc_address(), m.webui_url());
                until_done.await;
                m.shutdown();
                m.wait().await;
            }
            Some("worker") if args.len() == 5 || args.len() == 6 => {
                let w = flint_worker::service::start(flint_worker::service::WorkerOptions {
                    masters: vec![args[1].parse().context("master url")?],
                    host: args.get(5).map_or("127.0.0.1", String::as_str).into(),
                    port: 0,
                    webui_port: 0,
                    cores: Some(args[3].parse().context("cores")?),
                    memory_mb: Some(args[4].parse().context("MiB")?),
                    work_dir: args[2].clone().into(),
                    conf,
                })
                .await?;
                println!("url {} status {}/api/v1/status", w.rpc_address(), w.webui_url());
                until_done.await;
                w.shutdown();
                let _ = w.wait().await;
            }
            _ => bail!("usage: cluster_daemon master | cluster_daemon worker <master url> <work dir> <cores> <MiB> [host]"),
        }
        Ok(())
    })
}
