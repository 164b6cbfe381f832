//! The registry rendered for people: the table `flint conf` prints,
//! `docs/configuration.md` (`flint conf --markdown`) and `conf/flint.toml.template`
//! (`flint conf --template`). Generated files are compared with these in tests, so they
//! cannot drift from the registry.

use std::fmt::Write as _;

use crate::registry::{Kind, Setting, ENV_VARS, PREFIXES, SETTINGS, USER_PREFIX};

/// The settings grouped by the first part of their key, in registry order.
pub fn sections() -> Vec<(&'static str, Vec<&'static Setting>)> {
    let mut out: Vec<(&'static str, Vec<&'static Setting>)> = Vec::new();
    for s in SETTINGS {
        let section = s.key.split('.').next().unwrap_or(s.key);
        match out.iter_mut().find(|(name, _)| *name == section) {
            Some((_, list)) => list.push(s),
            None => out.push((section, vec![s])),
        }
    }
    out
}

/// The components that read `s`, comma-separated.
pub fn readers(s: &Setting) -> String {
    s.readers
        .iter()
        .map(|c| c.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every setting as an aligned text table: key, type, default, readers, doc.
pub fn table() -> String {
    let mut rows = vec![["KEY", "TYPE", "DEFAULT", "READ BY", "DESCRIPTION"].map(String::from)];
    for s in SETTINGS {
        rows.push([
            s.key.to_string(),
            s.kind.to_string(),
            s.default.describe(),
            readers(s),
            s.doc.to_string(),
        ]);
    }
    let mut widths = [0usize; 5];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

/// `docs/configuration.md`.
pub fn markdown() -> String {
    let mut out = String::new();
    out.push_str(
        "<!-- Generated from the settings registry (crates/conf/src/registry.rs) by\n     \
         `flint conf --markdown > docs/configuration.md`. Do not edit by hand: a test\n     \
         fails when this file differs from the registry. -->\n\n",
    );
    out.push_str("# Configuration\n\n");
    let _ = write!(
        out,
        "Every setting flint reads, with its type, default and the components that read it.\n\
         `flint conf` prints the same table (`--json` for a machine-readable list), and\n\
         [`conf/flint.toml.template`](../conf/flint.toml.template) has every key commented\n\
         out with its default.\n\n\
         Settings come from, later wins: the defaults below; the TOML file (`--config FILE`,\n\
         else `$FLINT_CONF_DIR/flint.toml`, else `conf/flint.toml`), where tables flatten to\n\
         dotted keys (`[rpc] ask_timeout = \"30s\"` sets `rpc.ask_timeout`); `FLINT_*`\n\
         environment variables (`FLINT_` and the key in upper case with dots as underscores:\n\
         `FLINT_RPC_ASK_TIMEOUT`); `--conf key=value`; and a command's own flags.\n\n\
         Every command checks them: an unknown key in the file or in `--conf` is refused\n\
         naming the nearest setting, a value of the wrong type is refused naming the key and\n\
         the form expected, and a `FLINT_*` variable that is neither a setting nor one of the\n\
         variables below is warned about. Keys of your own go under `{USER_PREFIX}` and pass\n\
         through unchecked.\n\n\
         Types: a *duration* takes a unit (`500ms`, `60s`, `1.5s`, `2m`, `1h`, `7d`) and a bare\n\
         number is read in the unit shown; a *size* takes a binary unit (`64k`, `512m`,\n\
         `1.5g`, `1t`) and a bare number is read in the unit shown; a *bool* is `true` or\n\
         `false`; an *integer* is a whole number.\n\n"
    );
    for (section, settings) in sections() {
        let _ = writeln!(out, "## `{section}`\n");
        out.push_str("| Key | Type | Default | Read by | Description |\n");
        out.push_str("|---|---|---|---|---|\n");
        for s in settings {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                s.key,
                s.kind,
                match s.default.value() {
                    Some(v) => format!("`{v}`"),
                    None => s.default.describe(),
                },
                readers(s),
                s.doc.replace('|', "\\|")
            );
        }
        out.push('\n');
    }
    out.push_str("## Families of settings under a prefix\n\n");
    out.push_str("| Keys | Type | Read by | Description |\n|---|---|---|---|\n");
    for p in PREFIXES {
        let readers: Vec<_> = p.readers.iter().map(|c| c.name()).collect();
        let _ = writeln!(
            out,
            "| `{}{}` | {} | {} | {} |",
            p.prefix,
            p.placeholder,
            p.kind,
            readers.join(", "),
            p.doc.replace('|', "\\|")
        );
    }
    out.push('\n');
    out.push_str("## Environment variables that are not settings\n\n");
    out.push_str("| Variable | Purpose |\n|---|---|\n");
    for v in ENV_VARS {
        let note = if v.test_only { " (tests only)" } else { "" };
        let _ = writeln!(out, "| `{}` | {}{note} |", v.name, v.doc);
    }
    out.push_str(
        "\nTest hooks, `FLINT_TEST_*` and `FLINT_<AREA>_TEST_*`, are known too and never \
         warned about.\n",
    );
    out
}

/// `conf/flint.toml.template`: every key commented out with its default and doc.
pub fn toml_template() -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "# flint settings. Copy this file to conf/flint.toml (or name it with --config) and\n\
         # uncomment what you change. Generated by `flint conf --template`; `flint conf` and\n\
         # docs/configuration.md list the same settings.\n\
         #\n\
         # Later wins: these defaults, this file, FLINT_* environment variables\n\
         # (FLINT_RPC_ASK_TIMEOUT sets rpc.ask_timeout), --conf key=value, command flags.\n\
         # Durations take units (500ms, 60s, 2m, 1h, 7d), sizes too (64k, 512m, 1.5g).\n\
         # Unknown keys are refused; keys of your own go under {USER_PREFIX}\n"
    );
    for (section, settings) in sections() {
        let _ = writeln!(out, "\n# ---- {section} ----");
        for s in settings {
            let _ = writeln!(out, "\n# {} [{}; read by {}]", s.doc, s.kind, readers(s));
            match s.default.value() {
                Some(v) => {
                    let _ = writeln!(out, "# {} = {}", s.key, toml_literal(s.kind, v));
                }
                None => {
                    let _ = writeln!(
                        out,
                        "# {} = <{}>    # unset: {}",
                        s.key,
                        s.kind.name(),
                        describe_unset(s)
                    );
                }
            }
        }
    }
    let _ = writeln!(out, "\n# ---- families of keys ----");
    for p in PREFIXES {
        let readers: Vec<_> = p.readers.iter().map(|c| c.name()).collect();
        let _ = writeln!(
            out,
            "\n# {} [{} each; read by {}]\n# {}{} = <{}>",
            p.doc,
            p.kind,
            readers.join(", "),
            p.prefix,
            p.placeholder,
            p.kind.name()
        );
    }
    out
}

fn describe_unset(s: &Setting) -> &'static str {
    match s.default {
        crate::registry::DefaultValue::Unset(why) => why,
        crate::registry::DefaultValue::Value(v) => v,
    }
}

/// `v` as a TOML value: bare for booleans and integers, quoted otherwise.
pub fn toml_literal(kind: Kind, v: &str) -> String {
    match kind {
        Kind::Bool | Kind::Integer { .. } => v.to_string(),
        _ => format!("{v:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_in_every_rendering() {
        let (t, md, tpl) = (table(), markdown(), toml_template());
        for s in SETTINGS {
            assert!(t.contains(s.key), "{}", s.key);
            assert!(md.contains(&format!("| `{}` |", s.key)), "{}", s.key);
            assert!(tpl.contains(&format!("\n# {} =", s.key)), "{}", s.key);
        }
        for v in ENV_VARS {
            assert!(md.contains(v.name), "{}", v.name);
        }
    }

    #[test]
    fn template_defaults_uncommented_are_valid_and_equal_the_defaults() {
        let mut text = String::new();
        for line in toml_template().lines() {
            if let Some(assign) = line.strip_prefix("# ") {
                if assign.contains(" = ") && !assign.contains(" = <") {
                    text.push_str(assign);
                    text.push('\n');
                }
            }
        }
        let mut conf = crate::Conf::new();
        conf.merge_toml_str(&text)
            .expect("the template's defaults parse");
        assert_eq!(conf.validate(), Ok(vec![]));
        for s in SETTINGS {
            if let Some(v) = s.default.value() {
                assert_eq!(conf.get(s.key), Some(v), "{}", s.key);
            }
        }
    }
}
