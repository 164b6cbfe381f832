//! Where a daemon's settings come from, in order: built-in defaults, the TOML file
//! (`--config`, else `$FLINT_CONF_DIR/flint.toml`, else `conf/flint.toml` if present),
//! `FLINT_*` environment variables, then `--conf key=value` flags and dedicated flags.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use flint_conf::Conf;

/// Options every daemon subcommand accepts.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CommonArgs {
    /// A setting, `key=value` (repeatable); wins over the config file and environment.
    #[arg(long = "conf", value_name = "KEY=VALUE")]
    pub conf: Vec<String>,
    /// TOML config file (default: $FLINT_CONF_DIR/flint.toml or conf/flint.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The config file to read, if any: explicit, else the conventional places.
fn config_file(explicit: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    if let Some(p) = explicit {
        if !p.is_file() {
            anyhow::bail!(
                "config file {} does not exist (given with --config)",
                p.display()
            );
        }
        return Ok(Some(p.to_path_buf()));
    }
    let dir = std::env::var_os("FLINT_CONF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("conf"));
    let p = dir.join("flint.toml");
    Ok(p.is_file().then_some(p))
}

/// Builds the layered settings. `known` lists the keys `FLINT_*` variables may set.
pub fn load(args: &CommonArgs, known: &[&str]) -> anyhow::Result<Conf> {
    let mut conf = Conf::new();
    if let Some(file) = config_file(args.config.as_deref())? {
        conf.merge_toml_file(&file)
            .with_context(|| format!("reading {}", file.display()))?;
    }
    // Variables that are not UTF-8 cannot be settings; skip them rather than panic.
    let vars = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    conf.merge_env(vars, known.iter().copied());
    conf.merge_overrides(args.conf.iter().map(String::as_str))?;
    Ok(conf)
}
