//! The placeholders a worker fills into a child's command (Spark's
//! `ExecutorRunner.substituteVariables`): one set of names, one substitution,
//! used for an executor's and a cluster-mode driver's program, arguments and
//! environment values.
//!
//! | placeholder | replaced by |
//! |---|---|
//! | `{{EXECUTOR_ID}}` | the executor id (`3`); empty for a driver |
//! | `{{HOSTNAME}}` | the worker's advertised host |
//! | `{{CORES}}` | the cores granted to the child |
//! | `{{APP_ID}}` | the application id; empty for a driver |
//! | `{{WORKER_URL}}` | the worker's endpoint, `flint://Worker@host:port` |
//! | `{{BINARY}}` | the path of the command's fetched [`BinarySource`](crate::BinarySource) in the worker's binary cache; left as it is when the command has none |

/// Replaced by the executor id (`3`).
pub const EXECUTOR_ID_PLACEHOLDER: &str = "{{EXECUTOR_ID}}";
/// Replaced by the worker's host name.
pub const HOSTNAME_PLACEHOLDER: &str = "{{HOSTNAME}}";
/// Replaced by the executor's core count.
pub const CORES_PLACEHOLDER: &str = "{{CORES}}";
/// Replaced by the application id.
pub const APP_ID_PLACEHOLDER: &str = "{{APP_ID}}";
/// Replaced by the worker's endpoint URL.
pub const WORKER_URL_PLACEHOLDER: &str = "{{WORKER_URL}}";
/// Replaced by the path of the command's binary in the worker's binary cache.
pub const BINARY_PLACEHOLDER: &str = "{{BINARY}}";

/// Every placeholder, braces included.
pub const PLACEHOLDERS: [&str; 6] = [
    EXECUTOR_ID_PLACEHOLDER,
    HOSTNAME_PLACEHOLDER,
    CORES_PLACEHOLDER,
    APP_ID_PLACEHOLDER,
    WORKER_URL_PLACEHOLDER,
    BINARY_PLACEHOLDER,
];

/// The values a worker substitutes for the placeholders.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placeholders {
    /// For `{{EXECUTOR_ID}}`.
    pub executor_id: String,
    /// For `{{HOSTNAME}}`: the worker's host.
    pub hostname: String,
    /// For `{{CORES}}`: cores granted to the child.
    pub cores: u32,
    /// For `{{APP_ID}}`.
    pub app_id: String,
    /// For `{{WORKER_URL}}`: the worker's endpoint, for the child's worker watcher.
    pub worker_url: String,
    /// For `{{BINARY}}`: the cached binary's path, when the command has one;
    /// `None` leaves `{{BINARY}}` as it is.
    pub binary: Option<String>,
}

impl Placeholders {
    /// The value of the placeholder `{{name}}` (`name` without braces), or
    /// `None` when it is not a known name (or `BINARY` without a binary).
    /// Names are case-sensitive.
    pub fn lookup(&self, name: &str) -> Option<String> {
        let braced =
            |p: &str| p.strip_prefix("{{").and_then(|p| p.strip_suffix("}}")) == Some(name);
        if braced(EXECUTOR_ID_PLACEHOLDER) {
            Some(self.executor_id.clone())
        } else if braced(HOSTNAME_PLACEHOLDER) {
            Some(self.hostname.clone())
        } else if braced(CORES_PLACEHOLDER) {
            Some(self.cores.to_string())
        } else if braced(APP_ID_PLACEHOLDER) {
            Some(self.app_id.clone())
        } else if braced(WORKER_URL_PLACEHOLDER) {
            Some(self.worker_url.clone())
        } else if braced(BINARY_PLACEHOLDER) {
            self.binary.clone()
        } else {
            None
        }
    }

    /// Replaces every known `{{NAME}}` in `text` by its value.
    ///
    /// Spark only replaces an argument that is exactly a placeholder; this also
    /// replaces placeholders inside a longer string (`--cores={{CORES}}`), which
    /// is a superset. Unknown placeholders (`{{FOO}}`) are left as they are, as
    /// in Spark, so that text meant for someone else passes through. One pass:
    /// a substituted value is not scanned again.
    pub fn substitute(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                out.push_str(&rest[start..]);
                return out;
            };
            match self.lookup(&after[..end]) {
                Some(value) => {
                    out.push_str(&value);
                    rest = &after[end + 2..];
                }
                None => {
                    // Keep the braces and rescan just after them, so that a known
                    // placeholder right behind is still found: `{{{{CORES}}`.
                    out.push_str("{{");
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placeholders() -> Placeholders {
        Placeholders {
            executor_id: "7".to_owned(),
            hostname: "host-a".to_owned(),
            cores: 4,
            app_id: "app-20240101000000-0001".to_owned(),
            worker_url: "flint://Worker@127.0.0.1:4040".to_owned(),
            binary: Some("/w/binaries/ab12".to_owned()),
        }
    }

    #[test]
    fn substitutes_whole_and_embedded_placeholders() {
        let p = placeholders();
        assert_eq!(p.substitute("{{EXECUTOR_ID}}"), "7");
        assert_eq!(p.substitute("--cores={{CORES}}"), "--cores=4");
        assert_eq!(
            p.substitute("{{HOSTNAME}}:{{APP_ID}} {{WORKER_URL}}"),
            "host-a:app-20240101000000-0001 flint://Worker@127.0.0.1:4040"
        );
        assert_eq!(p.substitute("{{BINARY}}"), "/w/binaries/ab12");
        assert_eq!(p.substitute("plain"), "plain");
        assert_eq!(p.substitute(""), "");
    }

    #[test]
    fn every_listed_placeholder_is_known() {
        let p = placeholders();
        for name in PLACEHOLDERS {
            assert_ne!(p.substitute(name), name, "{name}");
        }
    }

    #[test]
    fn leaves_unknown_and_malformed_placeholders() {
        let p = placeholders();
        assert_eq!(p.substitute("{{USER_JAR}}"), "{{USER_JAR}}");
        assert_eq!(p.substitute("{{cores}}"), "{{cores}}");
        assert_eq!(p.substitute("{{CORES"), "{{CORES");
        assert_eq!(p.substitute("{CORES}"), "{CORES}");
        assert_eq!(p.substitute("{{{{CORES}}"), "{{4");
        assert_eq!(p.substitute("a{{X}}b{{CORES}}c"), "a{{X}}b4c");
        let none = Placeholders::default();
        assert_eq!(none.substitute("{{BINARY}} x"), "{{BINARY}} x");
    }

    #[test]
    fn does_not_rescan_substituted_values() {
        let p = Placeholders {
            app_id: "{{CORES}}".to_owned(),
            cores: 2,
            ..Placeholders::default()
        };
        assert_eq!(p.substitute("{{APP_ID}}/{{CORES}}"), "{{CORES}}/2");
    }
}
