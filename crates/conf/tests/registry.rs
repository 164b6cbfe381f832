//! The registry against the source tree: every key the code passes to a getter of
//! `Conf` (directly, through a constant, or through a helper taking the conf first) and
//! every `FLINT_*` name the code uses must be registered, so a new key without a
//! registry entry fails CI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use flint_conf::registry;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `crates/*/<sub>/**/*.rs`, except flint-conf's own (its tests use made-up keys).
fn sources(sub: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for c in std::fs::read_dir(workspace().join("crates")).unwrap() {
        let c = c.unwrap().path();
        if c.file_name().is_some_and(|n| n == "conf") {
            continue;
        }
        rust_files(&c.join(sub), &mut files);
    }
    files.sort();
    files
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether `s` looks like a setting key: lower-case dotted words.
fn is_key(s: &str) -> bool {
    s.contains('.')
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('.')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
}

/// One argument at the start of `text`: a string literal, a list `&["a", B]`, or a
/// path whose last segment is returned (`m::WORKER_TIMEOUT` → `WORKER_TIMEOUT`).
enum Arg {
    Literal(String),
    Ident(String),
}

fn parse_args(text: &str) -> Vec<Arg> {
    let t = text.trim_start();
    if let Some(rest) = t.strip_prefix("&[") {
        let end = rest.find(']').unwrap_or(rest.len());
        return rest[..end]
            .split(',')
            .filter_map(|item| parse_args(item).into_iter().next())
            .collect();
    }
    let t = t.strip_prefix('&').unwrap_or(t);
    if let Some(rest) = t.strip_prefix('"') {
        let end = rest.find('"').unwrap_or(rest.len());
        return vec![Arg::Literal(rest[..end].to_string())];
    }
    let end = t
        .find(|c: char| !(is_ident(c) || c == ':'))
        .unwrap_or(t.len());
    let path = &t[..end];
    match path.rsplit("::").next() {
        Some(last) if !last.is_empty() => vec![Arg::Ident(last.to_string())],
        _ => vec![],
    }
}

/// `const NAME: &str = "value";` definitions in `text`.
fn consts(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (i, _) in text.match_indices("const ") {
        let rest = &text[i + 6..];
        let Some((name, after)) = rest.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if !name.chars().all(is_ident) {
            continue;
        }
        let after = after.trim_start();
        let Some(after) = after.strip_prefix("&str") else {
            continue;
        };
        let Some(after) = after.trim_start().strip_prefix('=') else {
            continue;
        };
        if let Some(v) = after.trim_start().strip_prefix('"') {
            if let Some(end) = v.find('"') {
                out.insert(name.to_string(), v[..end].to_string());
            }
        }
    }
    out
}

/// The text before `at` ends with an identifier (or field path) naming a conf.
fn receiver_is_conf(text: &str, at: usize) -> bool {
    let before = &text[..at];
    let start = before
        .rfind(|c: char| !(is_ident(c) || c == '.'))
        .map_or(0, |i| i + 1);
    before[start..].to_ascii_lowercase().ends_with("conf")
}

/// Every argument passed as a key in `text`: `<conf>.get(K)`, `.duration(K`,
/// `.bytes(K`, `.bool(K`, `.u64(K`, `.first_set(&[K, ..])`, `helper(conf, K` and the
/// items of `KEYS` arrays.
fn key_args(text: &str) -> Vec<Arg> {
    let mut out = Vec::new();
    for getter in [
        ".get(",
        ".duration(",
        ".bytes(",
        ".bool(",
        ".u64(",
        ".first_set(",
    ] {
        for (i, _) in text.match_indices(getter) {
            if getter == ".get(" && !receiver_is_conf(text, i) {
                continue;
            }
            out.extend(parse_args(&text[i + getter.len()..]));
        }
    }
    // helper(conf, KEY, …) and helper(&conf, KEY, …), across line breaks.
    for (i, _) in text.match_indices('(') {
        let rest = text[i + 1..].trim_start();
        let rest = rest.strip_prefix('&').unwrap_or(rest);
        let end = rest
            .find(|c: char| !(is_ident(c) || c == '.'))
            .unwrap_or(rest.len());
        if end == 0 || !rest[..end].to_ascii_lowercase().ends_with("conf") {
            continue;
        }
        if let Some(after) = rest[end..].trim_start().strip_prefix(',') {
            out.extend(parse_args(after));
        }
    }
    for (i, _) in text.match_indices("KEYS: &[&str] = ") {
        out.extend(parse_args(&text[i + "KEYS: &[&str] = ".len()..]));
    }
    out
}

#[test]
fn every_key_the_code_reads_is_registered() {
    let files = sources("src");
    let texts: Vec<(PathBuf, String)> = files
        .iter()
        .map(|p| (p.clone(), std::fs::read_to_string(p).unwrap()))
        .collect();
    let mut global = BTreeMap::new();
    for (_, t) in &texts {
        global.extend(consts(t));
    }
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut unresolved = Vec::new();
    for (path, text) in &texts {
        let local = consts(text);
        let rel = path
            .strip_prefix(workspace())
            .unwrap_or(path)
            .display()
            .to_string();
        for arg in key_args(text) {
            let value = match arg {
                Arg::Literal(s) => s,
                // SCREAMING_CASE names a constant; anything else is a variable.
                Arg::Ident(name)
                    if name
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit()) =>
                {
                    match local.get(&name).or_else(|| global.get(&name)) {
                        Some(v) => v.clone(),
                        None => {
                            unresolved.push(format!("{rel}: {name}"));
                            continue;
                        }
                    }
                }
                Arg::Ident(_) => continue,
            };
            if is_key(&value) {
                found.entry(value).or_default().insert(rel.clone());
            }
        }
    }
    assert!(
        unresolved.is_empty(),
        "constants passed to getters that this test cannot resolve: {unresolved:?}"
    );
    // The walk itself must work: these are read through a literal, a constant, a
    // helper taking the conf and a fallback list respectively.
    for k in [
        "rpc.message.max_size",
        "deploy.spread_out",
        "worker.cleanup.app_data_ttl",
        "rpc.stream.window",
        "network.timeout",
        "client.registration.retries",
        "auth.enabled",
    ] {
        assert!(
            found.contains_key(k),
            "the source walk missed {k}: {found:?}"
        );
    }
    assert!(
        found.len() >= 50,
        "only {} keys found: {found:?}",
        found.len()
    );
    let missing: Vec<String> = found
        .iter()
        .filter(|(k, _)| registry::setting(k).is_none())
        .map(|(k, files)| {
            format!(
                "{k} (read in {})",
                files.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    assert!(
        missing.is_empty(),
        "keys read by the code but missing from crates/conf/src/registry.rs (add them, \
         then regenerate docs/configuration.md and conf/flint.toml.template with \
         `flint conf --markdown` / `--template`):\n  {}",
        missing.join("\n  ")
    );
    let unread: Vec<&str> = registry::SETTINGS
        .iter()
        .map(|s| s.key)
        .filter(|k| !found.contains_key(*k))
        .collect();
    // Not an error: keys read through a variable, or under construction.
    eprintln!("registered keys the walk did not see read: {unread:?}");
}

#[test]
fn the_walk_sees_every_form_of_reading_a_key() {
    let text = r#"
        const VIA_CONST: &str = "x.via_const";
        let a = conf.get("x.literal");
        let b = self.conf.duration(VIA_CONST, d, TimeUnit::Seconds)?;
        let c = helper(
            conf,
            "x.helper",
            1,
        );
        let d = conf.first_set(&["x.first", "x.second"]);
        let e = at_least(&conf, "x.borrowed", 1);
        let f = conf.get(key);
        let g = map.get("not.a.conf");
        pub const KEYS: &[&str] = &[VIA_CONST, "x.listed"];
    "#;
    let consts = consts(text);
    let found: BTreeSet<String> = key_args(text)
        .into_iter()
        .filter_map(|a| match a {
            Arg::Literal(s) => Some(s),
            Arg::Ident(i) => consts.get(&i).cloned(),
        })
        .collect();
    let want: BTreeSet<String> = [
        "x.via_const",
        "x.literal",
        "x.helper",
        "x.first",
        "x.second",
        "x.borrowed",
        "x.listed",
    ]
    .map(String::from)
    .into();
    assert_eq!(found, want);
}

#[test]
fn every_flint_variable_the_code_names_is_known() {
    let mut files = sources("src");
    files.extend(sources("tests"));
    let mut unknown = BTreeSet::new();
    let mut seen = 0;
    for path in files {
        // This suite's own typos.
        if path.ends_with("cli/tests/settings.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, _) in text.match_indices("\"FLINT_") {
            let rest = &text[i + 1..];
            let end = rest
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            if name.ends_with('_') || !rest[end..].starts_with('"') {
                continue;
            }
            seen += 1;
            if registry::setting_for_env(name).is_none()
                && registry::env_var(name).is_none()
                && !registry::is_test_hook(name)
                && !name.starts_with("FLINT_APP_")
            {
                unknown.insert(format!("{name} ({})", path.display()));
            }
        }
    }
    assert!(seen > 20, "only {seen} FLINT_ names found");
    assert!(
        unknown.is_empty(),
        "FLINT_* names used in the code that are neither a setting's environment form, nor \
         in registry::ENV_VARS, nor a test hook (FLINT_<AREA>_TEST_*); add them to \
         ENV_VARS in crates/conf/src/registry.rs: {unknown:?}"
    );
}
