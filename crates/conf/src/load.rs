//! Layering the sources with every value checked against the [`registry`]: unknown
//! keys in the file or `--conf` are refused naming the nearest key, values of the wrong
//! type are refused naming the key and the expected form, and `FLINT_*` variables that
//! are neither settings nor known variables are reported as [`Warning`]s.

use std::fmt;
use std::path::Path;

use crate::registry::{self, Setting};
use crate::{Conf, ConfError, Source};

/// Something the operator should hear about that does not stop the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// A `FLINT_*` variable that is neither a setting nor a variable flint knows.
    UnknownEnv {
        /// The variable's name.
        name: String,
        /// The nearest setting's environment form (with its key) or known variable.
        nearest: Option<(String, Option<&'static str>)>,
    },
    /// A key of the user's own (`app.*`) that is one typo from a registered setting.
    NearSetting {
        /// The key as given.
        key: String,
        /// Where it was given.
        origin: String,
        /// The registered key it is close to.
        nearest: &'static str,
    },
    /// More of a resource than the machine has, e.g. `--cores 100000`.
    MoreThanMachine {
        /// What asked for it, e.g. `--cores 100000` or `worker.memory = 100t`.
        what: String,
        /// How much, in the resource's unit (cores or bytes).
        asked: u64,
        /// How much the machine has.
        machine: u64,
        /// Which resource.
        resource: Resource,
    },
}

/// A resource of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// CPU cores.
    Cores,
    /// Memory, in bytes.
    Memory,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::UnknownEnv { name, nearest } => {
                write!(
                    f,
                    "environment variable {name} is not a flint setting and is ignored; "
                )?;
                match nearest {
                    Some((env, Some(key))) => write!(f, "did you mean {env} ({key})?"),
                    Some((env, None)) => write!(f, "did you mean {env}?"),
                    None => f.write_str("`flint conf` lists the settings and their FLINT_* forms"),
                }
            }
            Warning::NearSetting {
                key,
                origin,
                nearest,
            } => write!(
                f,
                "{origin}: `{key}` is not a flint setting and passes through as one of your own \
                 (`{}*`); did you mean `{nearest}`?",
                registry::USER_PREFIX
            ),
            Warning::MoreThanMachine {
                what,
                asked,
                machine,
                resource: Resource::Cores,
            } => write!(
                f,
                "{what}: {asked} cores is more than the {machine} this machine has"
            ),
            Warning::MoreThanMachine {
                what,
                asked,
                machine,
                resource: Resource::Memory,
            } => write!(
                f,
                "{what}: {} is more than the {} of memory this machine has",
                gib(*asked),
                gib(*machine)
            ),
        }
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// Settings layered from every source, with what should be reported.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The settings.
    pub conf: Conf,
    /// Warnings to log before going on.
    pub warnings: Vec<Warning>,
}

/// Layers the TOML `file` (if any), the `FLINT_*` variables of `env` and the
/// `key=value` `overrides` (from `--conf`), in that order, checking each against the
/// registry: an unknown key or a malformed value in the file or the overrides (or a
/// malformed value in a setting's variable) is an error naming the key and the nearest
/// setting or expected form; an unknown `FLINT_*` variable is a warning.
pub fn load<'a>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: impl IntoIterator<Item = &'a str>,
) -> Result<Loaded, ConfError> {
    let mut conf = Conf::new();
    let mut warnings = Vec::new();
    if let Some(path) = file {
        let mut from_file = Conf::new();
        from_file.merge_toml_file(path)?;
        let origin = format!("config file {}", path.display());
        for (key, value) in from_file.iter() {
            check(key, value, &origin, &mut warnings).map_err(|e| match e {
                e @ ConfError::Unknown { .. } => e,
                other => ConfError::File {
                    path: path.display().to_string(),
                    reason: other.to_string(),
                },
            })?;
            conf.insert(key, value, Source::File);
        }
    }
    for (name, value) in env {
        if !name.starts_with("FLINT_") {
            continue;
        }
        if let Some(s) = registry::setting_for_env(&name) {
            s.check(&value).map_err(|reason| ConfError::Invalid {
                key: s.key.to_string(),
                value: value.clone(),
                reason: format!("{reason} (from {name})"),
            })?;
            conf.insert(s.key, value, Source::Env);
        } else if registry::env_var(&name).is_none()
            && !registry::is_test_hook(&name)
            && !is_user_env(&name)
        {
            warnings.push(Warning::UnknownEnv {
                nearest: registry::nearest_env(&name),
                name,
            });
        }
    }
    for pair in overrides {
        let (k, v) = pair
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| ConfError::NotKeyValue(pair.to_string()))?;
        check(k, v, "--conf", &mut warnings)?;
        conf.insert(k, v, Source::Override);
    }
    Ok(Loaded { conf, warnings })
}

/// `FLINT_APP_*`: the environment form of a user key; flint cannot tell its dots from
/// its underscores, so it is left alone.
fn is_user_env(name: &str) -> bool {
    name.starts_with("FLINT_APP_")
}

/// Checks one key and value given at `origin`.
fn check(
    key: &str,
    value: &str,
    origin: &str,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfError> {
    match registry::setting(key) {
        Some(s) => check_value(s, value),
        None if registry::prefix_setting(key).is_some() => {
            // The rest names an environment variable: no `=`, NUL or whitespace.
            let name = key.split_once(".env.").map_or(key, |(_, n)| n);
            if name.contains(|c: char| c == '=' || c == '\0' || c.is_whitespace()) {
                return Err(ConfError::Invalid {
                    key: key.to_string(),
                    value: value.to_string(),
                    reason: format!(
                        "{name:?} cannot be an environment variable's name (no `=`, NUL or spaces)"
                    ),
                });
            }
            Ok(())
        }
        None if registry::is_user_key(key) => {
            if let Some(nearest) = registry::renamed(key).or_else(|| registry::nearest_key(key)) {
                warnings.push(Warning::NearSetting {
                    key: key.to_string(),
                    origin: origin.to_string(),
                    nearest,
                });
            }
            Ok(())
        }
        None => Err(ConfError::Unknown {
            key: key.to_string(),
            origin: origin.to_string(),
            suggestion: registry::nearest_key(key),
        }),
    }
}

fn check_value(s: &Setting, value: &str) -> Result<(), ConfError> {
    s.check(value).map_err(|reason| ConfError::Invalid {
        key: s.key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    })
}

impl Conf {
    /// Checks every value already in this configuration against the registry, as
    /// [`load`] does for its sources (for settings assembled in code).
    pub fn validate(&self) -> Result<Vec<Warning>, ConfError> {
        let mut warnings = Vec::new();
        for (key, value) in self.iter() {
            let origin = self.source(key).map_or("code".into(), |s| s.to_string());
            check(key, value, &origin, &mut warnings)?;
        }
        Ok(warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn unknown_override_names_the_nearest_key() {
        let e = load(None, vec![], ["deploy.spreadout=false"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--conf: unknown setting `deploy.spreadout`; did you mean `deploy.spread_out`?"
        );
        let e = load(None, vec![], ["foo=1"]).unwrap_err();
        assert!(
            matches!(&e, ConfError::Unknown { key, suggestion: None, .. } if key == "foo"),
            "{e}"
        );
        assert!(e.to_string().contains("flint conf"), "{e}");
    }

    #[test]
    fn file_keys_and_types_are_checked() {
        let dir = std::env::temp_dir().join(format!("flint-conf-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flint.toml");
        std::fs::write(&path, "[master]\nport = \"abc\"\n").unwrap();
        let e = load(Some(&path), vec![], []).unwrap_err().to_string();
        assert!(
            e.contains("master.port") && e.contains("from 0 to 65535") && e.contains("flint.toml"),
            "{e}"
        );
        std::fs::write(&path, "[deploy]\nspreadout = false\n").unwrap();
        let e = load(Some(&path), vec![], []).unwrap_err().to_string();
        assert!(e.contains("did you mean `deploy.spread_out`?"), "{e}");
        std::fs::write(&path, "[master]\nport = 7078\n[app]\nmine = 1\n").unwrap();
        let l = load(Some(&path), vec![], []).unwrap();
        assert_eq!(l.conf.get("master.port"), Some("7078"));
        assert_eq!(l.conf.get("app.mine"), Some("1"));
        assert_eq!(l.conf.source("master.port"), Some(Source::File));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn environment_sets_settings_and_warns_about_typos() {
        let l = load(
            None,
            vars(&[
                ("FLINT_DEPLOY_SPREAD_OUT", "false"),
                ("FLINT_DEPLOY_SPREADOUT", "false"),
                ("FLINT_HOME", "/tmp/x"),
                ("FLINT_APP_MINE", "1"),
                ("FLINT_RPC_TEST_ROLE", "peer"),
                ("FLINT_DAEMON_TEST_SOMETHING", "1"),
                ("PATH", "/bin"),
            ]),
            [],
        )
        .unwrap();
        assert_eq!(l.conf.get("deploy.spread_out"), Some("false"));
        assert_eq!(l.conf.source("deploy.spread_out"), Some(Source::Env));
        assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
        assert_eq!(
            l.warnings[0].to_string(),
            "environment variable FLINT_DEPLOY_SPREADOUT is not a flint setting and is \
             ignored; did you mean FLINT_DEPLOY_SPREAD_OUT (deploy.spread_out)?"
        );
        let e = load(None, vars(&[("FLINT_MASTER_PORT", "http")]), []).unwrap_err();
        assert!(e.to_string().contains("FLINT_MASTER_PORT"), "{e}");
    }

    #[test]
    fn keys_under_a_prefix_pass_and_the_bare_prefix_does_not() {
        let l = load(
            None,
            vars(&[]),
            ["executor.env.MY_VAR=a b", "executor.env.PATH=/x"],
        )
        .unwrap();
        assert_eq!(l.conf.get("executor.env.MY_VAR"), Some("a b"));
        assert_eq!(l.conf.get("executor.env.PATH"), Some("/x"));
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let e = load(None, vars(&[]), ["executor.env.=1"]).unwrap_err();
        assert!(matches!(e, ConfError::Unknown { .. }), "{e}");
        let e = load(None, vars(&[]), ["executor.env.A B=1"]).unwrap_err();
        assert!(e.to_string().contains("environment variable's name"), "{e}");
    }

    #[test]
    fn user_keys_pass_and_near_misses_warn() {
        let l = load(
            None,
            vec![],
            ["app.my.thing=1", "app.registration.timeout=5s"],
        )
        .unwrap();
        assert_eq!(l.conf.get("app.my.thing"), Some("1"));
        // A key that moved out of the user's prefix passes, pointing at its new name.
        assert_eq!(
            l.warnings,
            vec![Warning::NearSetting {
                key: "app.registration.timeout".into(),
                origin: "--conf".into(),
                nearest: "client.registration.timeout",
            }]
        );
        let e = load(None, vec![], ["client.registration.timout=5s"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("did you mean `client.registration.timeout`?"),
            "{e}"
        );
        let e = load(None, vec![], ["client.registration.timeout=soon"]).unwrap_err();
        assert!(matches!(e, ConfError::Invalid { .. }), "{e}");
    }

    #[test]
    fn layers_apply_in_order_and_validate_checks_code() {
        let dir = std::env::temp_dir().join(format!("flint-conf-order-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("flint.toml");
        std::fs::write(&path, "worker.timeout = \"1s\"\nnetwork.timeout = 5\n").unwrap();
        let l = load(
            Some(&path),
            vars(&[("FLINT_WORKER_TIMEOUT", "2s")]),
            ["worker.timeout=3s"],
        )
        .unwrap();
        assert_eq!(l.conf.get("worker.timeout"), Some("3s"));
        assert_eq!(l.conf.get("network.timeout"), Some("5"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(Conf::new().set("nope.nothing", "1").validate().is_err());
        assert_eq!(Conf::new().set("ui.host", "0.0.0.0").validate(), Ok(vec![]));
    }
}
