//! flint's settings: one flat map of dotted keys (`rpc.ask_timeout`, `worker.timeout`)
//! to string values, layered defaults → TOML file → `FLINT_*` environment → explicit
//! overrides (`--conf key=value`), with typed getters that parse human units
//! (`60s`, `500ms`, `2g`) and name the offending key when a value is wrong.
//!
//! This crate knows setting *names* and how to parse values; it knows nothing of what
//! a master, worker or RPC environment does with them. [`registry`] lists every setting
//! with its type, default and doc; [`load`] layers the sources and refuses unknown keys
//! and malformed values, naming the nearest key; [`docs`] renders the registry as
//! `flint conf` shows it, as Markdown and as a commented TOML template; [`machine`]
//! reads the machine's cores and memory so absurd offers can be warned about; [`home`]
//! finds the flint home (`$FLINT_HOME`, else `~/.flint`) that default paths live in.

pub mod docs;
pub mod home;
mod load;
pub mod machine;
pub mod registry;

pub use load::{load, Loaded, Resource, Warning};

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// A setting that could not be read or parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfError {
    /// A value did not parse as the type the setting needs.
    #[error("setting {key} = {value:?} is not valid: {reason}")]
    Invalid {
        /// The setting's key.
        key: String,
        /// The value as given.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// A `--conf` argument was not of the form `key=value`.
    #[error("{0:?} is not of the form key=value")]
    NotKeyValue(String),
    /// A setting, or the file it names, cannot be used; the message names the file or
    /// value and says what to do (for example a secret file others may read).
    #[error("{message}")]
    Unusable {
        /// The setting concerned.
        key: String,
        /// The whole explanation, ready for the operator.
        message: String,
    },
    /// A key that no component reads and that is not the user's own (`app.*`).
    #[error("{origin}: unknown setting `{key}`; {}", match suggestion {
        Some(s) => format!("did you mean `{s}`?"),
        None => format!("`flint conf` lists every setting, and keys of your own go under `{}`", registry::USER_PREFIX),
    })]
    Unknown {
        /// The key as given.
        key: String,
        /// Where it was given: `--conf key=value`, `config file PATH`.
        origin: String,
        /// The registered key it most likely meant.
        suggestion: Option<&'static str>,
    },
    /// The config file could not be read or parsed.
    #[error("config file {path}: {reason}")]
    File {
        /// The file's path.
        path: String,
        /// Why it could not be used.
        reason: String,
    },
}

/// Why a value does not parse as its setting's type. The text says what was expected,
/// for the operator; [`ConfError::Invalid`] adds the key and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not a number with a time unit.
    #[error("expected a number with a unit such as 500ms, 60s, 2m, 1h")]
    NotADuration,
    /// A number with a unit that is not one of time.
    #[error("unknown time unit {0:?}; use ms, s, m, h or d")]
    TimeUnit(String),
    /// More milliseconds than a u64 holds.
    #[error("duration too large")]
    DurationTooLarge,
    /// A fraction of a millisecond.
    #[error("durations are counted in whole milliseconds")]
    FractionalMillis,
    /// Not a number with a size unit.
    #[error("expected a size such as 512m, 1.5g or 2g")]
    NotASize,
    /// A number with a unit that is not one of size.
    #[error("unknown size unit {0:?}; use k, m, g or t")]
    SizeUnit(String),
    /// More bytes than a u64 holds.
    #[error("size too large")]
    SizeTooLarge,
    /// A fraction of a byte.
    #[error("a size in bytes must be a whole number")]
    FractionalBytes,
    /// Not a boolean.
    #[error("expected true or false")]
    NotABool,
    /// Not a whole number in the setting's range (the range, as text).
    #[error("expected {0}")]
    OutOfRange(String),
    /// An empty path.
    #[error("expected a path")]
    EmptyPath,
}

/// Why TOML text could not be layered over a configuration.
#[derive(Debug, thiserror::Error)]
pub enum TomlError {
    /// Not valid TOML.
    #[error("{0}")]
    Syntax(#[from] toml::de::Error),
    /// An array value: settings are scalars (a list is a comma-separated string).
    #[error("{key}: arrays are not supported; write the value as a string")]
    Array {
        /// The dotted key of the array.
        key: String,
    },
}

/// Where a value came from, so error messages and `flint status` can say so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Set in code or by a default.
    Code,
    /// Read from the TOML config file.
    File,
    /// Read from a `FLINT_*` environment variable.
    Env,
    /// Given as `--conf key=value` or a command-line flag.
    Override,
}

/// A layered, flat map of settings.
#[derive(Debug, Clone, Default)]
pub struct Conf {
    values: BTreeMap<String, (String, Source)>,
}

impl Conf {
    /// An empty configuration: every getter returns its default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value` (from code), replacing any earlier value.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(key, value, Source::Code);
        self
    }

    /// Sets `key` to `value`, recording where it came from.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>, source: Source) {
        self.values.insert(key.into(), (value.into(), source));
    }

    /// Removes `key`.
    pub fn remove(&mut self, key: &str) {
        self.values.remove(key);
    }

    /// The raw value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(|(v, _)| v.as_str())
    }

    /// Where the value of `key` came from, if set.
    pub fn source(&self, key: &str) -> Option<Source> {
        self.values.get(key).map(|(_, s)| *s)
    }

    /// Every key and value, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values
            .iter()
            .map(|(k, (v, _))| (k.as_str(), v.as_str()))
    }

    /// Layers a TOML file over this configuration. Tables flatten to dotted keys:
    /// `[rpc] ask_timeout = "30s"` sets `rpc.ask_timeout`.
    pub fn merge_toml_file(&mut self, path: &Path) -> Result<(), ConfError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        self.merge_toml_str(&text).map_err(|e| ConfError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Layers TOML text over this configuration (see [`Conf::merge_toml_file`]).
    pub fn merge_toml_str(&mut self, text: &str) -> Result<(), TomlError> {
        let table: toml::Table = text.parse()?;
        let mut flat = Vec::new();
        flatten("", &toml::Value::Table(table), &mut flat)?;
        for (k, v) in flat {
            self.insert(k, v, Source::File);
        }
        Ok(())
    }

    /// Layers `FLINT_*` variables over this configuration. A variable maps to a key by
    /// lower-casing it and reading `_` as either `.` or `_`; it is taken only when that
    /// matches one of `known_keys` (so `FLINT_AUTH_SECRET` sets `auth.secret` and
    /// `FLINT_RPC_ASK_TIMEOUT` sets `rpc.ask_timeout`).
    pub fn merge_env<'a>(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
        known_keys: impl IntoIterator<Item = &'a str> + Clone,
    ) {
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix("FLINT_") else {
                continue;
            };
            let wanted = rest.to_ascii_lowercase();
            if let Some(key) = known_keys
                .clone()
                .into_iter()
                .find(|k| k.replace('.', "_") == wanted)
            {
                self.insert(key, value, Source::Env);
            }
        }
    }

    /// Layers `key=value` overrides (from `--conf`) over this configuration.
    pub fn merge_overrides<'a>(
        &mut self,
        pairs: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ConfError> {
        for pair in pairs {
            let (k, v) = pair
                .split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .ok_or_else(|| ConfError::NotKeyValue(pair.to_string()))?;
            self.insert(k.trim(), v.trim(), Source::Override);
        }
        Ok(())
    }

    /// The first of `keys` that is set, with its key: how fallbacks such as
    /// `rpc.ask_timeout` → `network.timeout` are resolved.
    pub fn first_set<'k>(&self, keys: &[&'k str]) -> Option<(&'k str, &str)> {
        keys.iter().find_map(|k| self.get(k).map(|v| (*k, v)))
    }

    /// A duration: `key` if set, else `default`. Bare numbers are read in `bare_unit`.
    pub fn duration(
        &self,
        key: &str,
        default: Duration,
        bare_unit: TimeUnit,
    ) -> Result<Duration, ConfError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => parse_duration(v, bare_unit).map_err(|e| invalid(key, v, e.to_string())),
        }
    }

    /// A byte size: `key` if set, else `default`. Bare numbers are read in `bare_unit`.
    pub fn bytes(&self, key: &str, default: u64, bare_unit: SizeUnit) -> Result<u64, ConfError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => parse_size(v, bare_unit).map_err(|e| invalid(key, v, e.to_string())),
        }
    }

    /// A boolean (`true`/`false`/`yes`/`no`/`1`/`0`): `key` if set, else `default`.
    pub fn bool(&self, key: &str, default: bool) -> Result<bool, ConfError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => {
                parse_bool(v).ok_or_else(|| invalid(key, v, "expected true or false".into()))
            }
        }
    }

    /// An unsigned integer: `key` if set, else `default`.
    pub fn u64(&self, key: &str, default: u64) -> Result<u64, ConfError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| invalid(key, v, "expected a whole number".into())),
        }
    }
}

fn invalid(key: &str, value: &str, reason: String) -> ConfError {
    ConfError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        reason,
    }
}

fn flatten(
    prefix: &str,
    value: &toml::Value,
    out: &mut Vec<(String, String)>,
) -> Result<(), TomlError> {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out)?;
            }
        }
        toml::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        toml::Value::Integer(i) => out.push((prefix.to_string(), i.to_string())),
        toml::Value::Float(f) => out.push((prefix.to_string(), f.to_string())),
        toml::Value::Boolean(b) => out.push((prefix.to_string(), b.to_string())),
        toml::Value::Datetime(d) => out.push((prefix.to_string(), d.to_string())),
        toml::Value::Array(_) => {
            return Err(TomlError::Array {
                key: prefix.to_string(),
            })
        }
    }
    Ok(())
}

/// The unit a bare number (no suffix) is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeUnit {
    /// Milliseconds.
    Millis,
    /// Seconds.
    Seconds,
}

/// The unit a bare number (no suffix) is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeUnit {
    /// Bytes.
    Bytes,
    /// Mebibytes.
    Mebibytes,
}

/// Parses `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0` (any case).
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Some(true),
        "false" | "no" | "0" | "off" => Some(false),
        _ => None,
    }
}

/// A number with an optional decimal part (`1`, `1.5`) followed by a unit: the whole
/// part, the decimal digits and the rest.
fn split_number(t: &str) -> Option<(u64, &str, &str)> {
    let int_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let whole = t[..int_end].parse().ok()?;
    let rest = &t[int_end..];
    let Some(after_point) = rest.strip_prefix('.') else {
        return Some((whole, "", rest));
    };
    let frac_end = after_point
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(after_point.len());
    let (frac, unit) = after_point.split_at(frac_end);
    // At least one decimal digit, and no more than a u128 scale can hold.
    (!frac.is_empty() && frac.len() <= 18).then_some((whole, frac, unit))
}

/// `whole.frac × per`, rounded down, or `None` when it overflows a u64.
fn scaled(whole: u64, frac: &str, per: u64) -> Option<(u64, bool)> {
    let scale = 10u128.pow(u32::try_from(frac.len()).ok()?);
    let frac_n: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let part = frac_n * u128::from(per);
    let total = u128::from(whole) * u128::from(per) + part / scale;
    // Not `is_multiple_of`: it needs Rust 1.87 and the workspace supports 1.85.
    let rest = part % scale;
    Some((u64::try_from(total).ok()?, rest != 0))
}

/// Parses `500ms`, `60s`, `1.5s`, `2m`, `1h`, `7d`, or a bare number in `bare_unit`.
pub fn parse_duration(text: &str, bare_unit: TimeUnit) -> Result<Duration, ValueError> {
    let t = text.trim().to_ascii_lowercase();
    let (n, frac, unit) = split_number(&t).ok_or(ValueError::NotADuration)?;
    let ms_per = match unit.trim() {
        "" => match bare_unit {
            TimeUnit::Millis => 1,
            TimeUnit::Seconds => 1_000,
        },
        "ms" => 1,
        "s" | "sec" | "secs" => 1_000,
        "m" | "min" | "mins" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(ValueError::TimeUnit(other.to_string())),
    };
    match scaled(n, frac, ms_per) {
        None => Err(ValueError::DurationTooLarge),
        Some((_, true)) if ms_per == 1 => Err(ValueError::FractionalMillis),
        Some((ms, _)) => Ok(Duration::from_millis(ms)),
    }
}

/// Parses `512`, `64k`, `128m`, `2g`, `1.5g`, `1t` (binary units, optional trailing
/// `b`/`ib`), or a bare number in `bare_unit`. A decimal part is rounded down to whole
/// bytes.
pub fn parse_size(text: &str, bare_unit: SizeUnit) -> Result<u64, ValueError> {
    let t = text.trim().to_ascii_lowercase();
    let (n, frac, unit) = split_number(&t).ok_or(ValueError::NotASize)?;
    let unit = unit.trim().trim_end_matches("ib").trim_end_matches('b');
    let mult: u64 = match unit {
        "" if t.ends_with('b') => 1,
        "" => match bare_unit {
            SizeUnit::Bytes => 1,
            SizeUnit::Mebibytes => 1 << 20,
        },
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        other => return Err(ValueError::SizeUnit(other.to_string())),
    };
    match scaled(n, frac, mult) {
        None => Err(ValueError::SizeTooLarge),
        Some((_, true)) if mult == 1 => Err(ValueError::FractionalBytes),
        Some((bytes, _)) => Ok(bytes),
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Code => "default or code",
            Source::File => "config file",
            Source::Env => "environment",
            Source::Override => "--conf",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(
            parse_duration("60s", TimeUnit::Millis),
            Ok(Duration::from_secs(60))
        );
        assert_eq!(
            parse_duration("250ms", TimeUnit::Seconds),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            parse_duration("2m", TimeUnit::Millis),
            Ok(Duration::from_secs(120))
        );
        assert_eq!(
            parse_duration("120", TimeUnit::Seconds),
            Ok(Duration::from_secs(120))
        );
        assert!(parse_duration("soon", TimeUnit::Seconds).is_err());
        assert!(parse_duration("5 weeks", TimeUnit::Seconds).is_err());
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("128m", SizeUnit::Bytes), Ok(128 << 20));
        assert_eq!(parse_size("2g", SizeUnit::Bytes), Ok(2 << 30));
        assert_eq!(parse_size("2GiB", SizeUnit::Bytes), Ok(2 << 30));
        assert_eq!(parse_size("4096", SizeUnit::Bytes), Ok(4096));
        assert_eq!(parse_size("4096b", SizeUnit::Mebibytes), Ok(4096));
        assert_eq!(parse_size("64", SizeUnit::Mebibytes), Ok(64 << 20));
        assert!(parse_size("lots", SizeUnit::Bytes).is_err());
    }

    #[test]
    fn sizes_and_durations_take_decimals() {
        assert_eq!(parse_size("1.5g", SizeUnit::Bytes), Ok(3 << 29));
        assert_eq!(parse_size("1.5G", SizeUnit::Mebibytes), Ok(1536 << 20));
        assert_eq!(parse_size("0.5m", SizeUnit::Bytes), Ok(512 << 10));
        assert_eq!(parse_size("1.5", SizeUnit::Mebibytes), Ok(3 << 19));
        assert_eq!(parse_size("0.1k", SizeUnit::Bytes), Ok(102));
        assert!(parse_size("1.5", SizeUnit::Bytes).is_err());
        assert!(parse_size("1.", SizeUnit::Bytes).is_err());
        assert!(parse_size(".5g", SizeUnit::Bytes).is_err());
        assert!(parse_size("1.2.3g", SizeUnit::Bytes).is_err());
        assert!(parse_size("99999999999t", SizeUnit::Bytes).is_err());
        assert_eq!(
            parse_duration("1.5s", TimeUnit::Millis),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_duration("0.25", TimeUnit::Seconds),
            Ok(Duration::from_millis(250))
        );
        assert!(parse_duration("1.5ms", TimeUnit::Seconds).is_err());
        assert!(parse_duration("1.5", TimeUnit::Millis).is_err());
    }

    #[test]
    fn errors_name_the_key() {
        let c = Conf::new().set("rpc.ask_timeout", "forever");
        let e = c
            .duration("rpc.ask_timeout", Duration::from_secs(1), TimeUnit::Seconds)
            .unwrap_err();
        assert!(e.to_string().contains("rpc.ask_timeout"), "{e}");
    }

    #[test]
    fn layers_apply_in_order() {
        let mut c = Conf::new().set("a.b", "code");
        c.merge_toml_str("[a]\nb = \"file\"\nc = 3\n").unwrap();
        assert_eq!(c.get("a.b"), Some("file"));
        assert_eq!(c.get("a.c"), Some("3"));
        c.merge_env(
            vec![
                ("FLINT_A_B".to_string(), "env".to_string()),
                ("FLINT_UNKNOWN".to_string(), "x".to_string()),
                ("PATH".to_string(), "/bin".to_string()),
            ],
            ["a.b", "a.c"],
        );
        assert_eq!(c.get("a.b"), Some("env"));
        assert_eq!(c.source("a.b"), Some(Source::Env));
        c.merge_overrides(["a.b=flag"]).unwrap();
        assert_eq!(c.get("a.b"), Some("flag"));
        assert!(matches!(
            c.merge_overrides(["novalue"]),
            Err(ConfError::NotKeyValue(_))
        ));
    }

    #[test]
    fn env_names_match_keys_with_underscores() {
        let mut c = Conf::new();
        c.merge_env(
            vec![("FLINT_RPC_ASK_TIMEOUT".to_string(), "5s".to_string())],
            ["rpc.ask_timeout", "auth.secret"],
        );
        assert_eq!(c.get("rpc.ask_timeout"), Some("5s"));
    }

    #[test]
    fn first_set_resolves_fallbacks() {
        let c = Conf::new().set("network.timeout", "10s");
        assert_eq!(
            c.first_set(&["rpc.ask_timeout", "network.timeout"]),
            Some(("network.timeout", "10s"))
        );
        assert_eq!(c.first_set(&["nothing"]), None);
    }
}
