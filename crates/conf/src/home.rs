//! The flint home: one directory per user for everything flint keeps between runs —
//! the default cluster secret, `start-cluster`'s pid files (`run/`) and logs
//! (`logs/`), and the workers' work dirs (`work/`). It is `$FLINT_HOME`, else
//! `~/.flint`; each of the subdirectories has its own setting or flag, so nothing
//! lands in a fixed place in /tmp or relative to the directory a command runs in.

use std::ffi::OsString;
use std::path::PathBuf;

/// The variable naming the flint home.
pub const HOME_ENV: &str = "FLINT_HOME";
/// The home's subdirectory for `start-cluster`'s pid files.
pub const PID_SUBDIR: &str = "run";
/// The home's subdirectory for `start-cluster`'s daemon logs.
pub const LOG_SUBDIR: &str = "logs";
/// The home's subdirectory for the workers' work dirs.
pub const WORK_SUBDIR: &str = "work";

/// Neither `$FLINT_HOME` nor `$HOME` is set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot find the flint home for {what}: neither FLINT_HOME nor HOME is set; set \
     FLINT_HOME{}",
    match alternative { Some(a) => format!(", or {a}"), None => String::new() }
)]
pub struct NoHome {
    /// What the home was needed for (`the work dir`).
    pub what: String,
    /// The setting or flag that names the directory instead.
    pub alternative: Option<String>,
}

/// The flint home, `$FLINT_HOME`, else `$HOME/.flint`. `what` (`the work dir`) and
/// `alternative` (`give --work-dir`) go into the error when neither is set.
pub fn flint_home(what: &str, alternative: Option<&str>) -> Result<PathBuf, NoHome> {
    home_with(&|name| std::env::var_os(name), what, alternative)
}

/// `<flint home>/<subdir>`.
pub fn home_dir(subdir: &str, what: &str, alternative: Option<&str>) -> Result<PathBuf, NoHome> {
    Ok(flint_home(what, alternative)?.join(subdir))
}

fn home_with(
    var: &dyn Fn(&str) -> Option<OsString>,
    what: &str,
    alternative: Option<&str>,
) -> Result<PathBuf, NoHome> {
    let set = |name| var(name).filter(|v| !v.is_empty());
    if let Some(home) = set(HOME_ENV) {
        return Ok(PathBuf::from(home));
    }
    match set("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".flint")),
        None => Err(NoHome {
            what: what.to_string(),
            alternative: alternative.map(str::to_string),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn flint_home_wins_over_home_and_empty_counts_as_unset() {
        let got = home_with(
            &vars(&[("FLINT_HOME", "/srv/f"), ("HOME", "/h")]),
            "x",
            None,
        );
        assert_eq!(got.unwrap(), PathBuf::from("/srv/f"));
        let got = home_with(&vars(&[("FLINT_HOME", ""), ("HOME", "/h")]), "x", None);
        assert_eq!(got.unwrap(), PathBuf::from("/h/.flint"));
        let e = home_with(&vars(&[]), "the work dir", Some("give --work-dir")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot find the flint home for the work dir: neither FLINT_HOME nor HOME is set; \
             set FLINT_HOME, or give --work-dir"
        );
    }
}
