//! `flint conf`: every setting flint reads, from the registry in `flint_conf`, with
//! its type, default, the components that read it and one line of doc — as a table,
//! as JSON (`--json`), as the Markdown of `docs/configuration.md` (`--markdown`) or as
//! the commented TOML of `conf/flint.toml.template` (`--template`).

use flint_conf::{docs, registry};
use serde_json::json;

/// Arguments of `flint conf`.
#[derive(clap::Args, Debug)]
pub struct ConfArgs {
    /// Print JSON: every setting and every known non-setting FLINT_* variable.
    #[arg(long, conflicts_with_all = ["markdown", "template"])]
    pub json: bool,
    /// Print docs/configuration.md (`flint conf --markdown > docs/configuration.md`).
    #[arg(long, conflicts_with = "template")]
    pub markdown: bool,
    /// Print conf/flint.toml.template: every key commented out with its default.
    #[arg(long)]
    pub template: bool,
}

/// Prints the registry in the form asked for.
pub fn run(args: &ConfArgs) -> anyhow::Result<()> {
    let text = if args.markdown {
        docs::markdown()
    } else if args.template {
        docs::toml_template()
    } else if args.json {
        let mut s = serde_json::to_string_pretty(&as_json())?;
        s.push('\n');
        s
    } else {
        docs::table()
    };
    print!("{text}");
    Ok(())
}

/// The registry as a JSON document.
fn as_json() -> serde_json::Value {
    let settings: Vec<_> = registry::SETTINGS
        .iter()
        .map(|s| {
            json!({
                "key": s.key,
                "type": s.kind.name(),
                "bare_unit": s.kind.bare_unit(),
                "expected": s.kind.expected(),
                "default": s.default.value(),
                "default_text": s.default.describe(),
                "readers": s.readers.iter().map(|c| c.name()).collect::<Vec<_>>(),
                "doc": s.doc,
                "env": s.env_name(),
            })
        })
        .collect();
    let env: Vec<_> = registry::ENV_VARS
        .iter()
        .map(|v| json!({ "name": v.name, "doc": v.doc, "test_only": v.test_only }))
        .collect();
    json!({
        "user_prefix": registry::USER_PREFIX,
        "settings": settings,
        "environment": env,
    })
}
