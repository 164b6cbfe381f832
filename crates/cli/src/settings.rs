//! Where a command's settings come from, in order: built-in defaults, the TOML file
//! (`--config`, else `$FLINT_CONF_DIR/flint.toml`, else `conf/flint.toml` if present),
//! `FLINT_*` environment variables, then `--conf key=value` flags and dedicated flags.
//!
//! Every command loads them through [`load`], which checks them against the settings
//! registry (`flint_conf::registry`): unknown keys and malformed values are refused
//! naming the nearest key or the expected form, unknown `FLINT_*` variables are warned
//! about. A dedicated flag (`--port`) wins over its setting (`master.port`), which is
//! read with the helpers here.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use flint_conf::{Conf, SizeUnit};

/// Options every daemon subcommand accepts.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CommonArgs {
    /// A setting, `key=value` (repeatable); wins over the config file and environment.
    /// `flint conf` lists every setting.
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

/// Builds the layered, checked settings and logs their warnings. `_known` is ignored:
/// the registry says which keys exist (it is kept for callers that still pass
/// [`crate::known_keys`]).
pub fn load(args: &CommonArgs, _known: &[&str]) -> anyhow::Result<Conf> {
    let file = config_file(args.config.as_deref())?;
    // Variables that are not UTF-8 cannot be settings; skip them rather than panic.
    let vars = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let loaded = flint_conf::load(file.as_deref(), vars, args.conf.iter().map(String::as_str))?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    Ok(loaded.conf)
}

/// Logs a warning when `cores` (asked for by `what`) is more than this machine has.
pub fn warn_cores(what: &str, cores: u64) {
    if let Some(w) = flint_conf::machine::check_cores(what, cores) {
        tracing::warn!("{w}");
    }
}

/// Logs a warning when `mb` MiB of memory (asked for by `what`) is more than this
/// machine has.
pub fn warn_memory(what: &str, mb: u64) {
    if let Some(w) = flint_conf::machine::check_memory(what, mb.saturating_mul(1 << 20)) {
        tracing::warn!("{w}");
    }
}

/// A flag's value (with its name) else a setting's value (with its key), for
/// messages: `--port 70000` or `master.port = 70000`.
pub struct Given {
    /// The value as text.
    pub text: String,
    /// `--flag VALUE` or `key = VALUE`.
    pub origin: String,
}

/// The text of `flag` (named `flag_name`) if given, else of the setting `key`.
pub fn given(conf: &Conf, key: &str, flag_name: &str, flag: Option<&str>) -> Option<Given> {
    match flag {
        Some(t) => Some(Given {
            text: t.to_string(),
            origin: format!("{flag_name} {t}"),
        }),
        None => conf.get(key).map(|t| Given {
            text: t.to_string(),
            origin: format!("{key} = {t}"),
        }),
    }
}

/// A port: the flag if given, else the setting `key`, else `default`.
pub fn port(conf: &Conf, key: &str, flag: Option<u16>, default: u16) -> anyhow::Result<u16> {
    if let Some(p) = flag {
        return Ok(p);
    }
    let v = conf.u64(key, u64::from(default))?;
    u16::try_from(v).with_context(|| format!("setting {key} = {v} is not a port (0 to 65535)"))
}

/// Text: the flag if given, else the setting `key` (when not blank), else `default`.
pub fn text(conf: &Conf, key: &str, flag: Option<String>, default: &str) -> String {
    flag.or_else(|| {
        conf.get(key)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    })
    .unwrap_or_else(|| default.to_string())
}

/// The work dir: `flag` (named `flag_name`) if given, else the setting `worker.dir`,
/// else `$FLINT_HOME/work` (never a directory relative to where the command runs,
/// unless given so).
pub fn work_dir(conf: &Conf, flag: Option<PathBuf>, flag_name: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p);
    }
    if let Some(p) = conf
        .get("worker.dir")
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        return Ok(PathBuf::from(p));
    }
    let alternative = format!("give {flag_name} or set worker.dir");
    Ok(flint_conf::home::home_dir(
        flint_conf::home::WORK_SUBDIR,
        "the work dir",
        Some(&alternative),
    )?)
}

/// A memory size in MiB from `given` (a flag or a setting), naming it when it is wrong.
pub fn memory_mb(given: Option<&Given>) -> anyhow::Result<Option<u64>> {
    given
        .map(|g| {
            flint_conf::parse_size(&g.text, SizeUnit::Mebibytes)
                .map(|b| b >> 20)
                .map_err(|e| anyhow::anyhow!("{} is not valid: {e}", g.origin))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_settings_over_defaults() {
        let conf = Conf::new()
            .set("master.port", "7078")
            .set("master.host", " ");
        assert_eq!(port(&conf, "master.port", Some(1), 7077).unwrap(), 1);
        assert_eq!(port(&conf, "master.port", None, 7077).unwrap(), 7078);
        assert_eq!(port(&Conf::new(), "master.port", None, 7077).unwrap(), 7077);
        let e = port(
            &Conf::new().set("master.port", "70000"),
            "master.port",
            None,
            1,
        );
        assert!(e.unwrap_err().to_string().contains("master.port"));
        assert_eq!(text(&conf, "master.host", None, "127.0.0.1"), "127.0.0.1");
        assert_eq!(text(&conf, "master.host", Some("h".into()), "x"), "h");
    }

    #[test]
    fn memory_names_where_it_came_from() {
        let conf = Conf::new().set("worker.memory", "lots");
        let g = given(&conf, "worker.memory", "--memory", None);
        let e = memory_mb(g.as_ref()).unwrap_err().to_string();
        assert!(e.starts_with("worker.memory = lots is not valid"), "{e}");
        let g = given(&conf, "worker.memory", "--memory", Some("1.5g"));
        assert_eq!(memory_mb(g.as_ref()).unwrap(), Some(1536));
        let g = given(&conf, "x", "--memory-per-worker", Some("abc"));
        let e = memory_mb(g.as_ref()).unwrap_err().to_string();
        assert!(e.starts_with("--memory-per-worker abc is not valid"), "{e}");
    }
}
