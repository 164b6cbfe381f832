//! Counts the lines of a file (or directory, or glob) and those containing a word:
//! `cargo run -p flint --example line_count -- PATH [WORD]`.
//!
//! Runs on the master given by `FLINT_MASTER`, else `local[*]`.

use flint::prelude::*;

fn main() -> flint::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: line_count PATH [WORD]");
        std::process::exit(2);
    };
    let word = args.next().unwrap_or_else(|| "flint".to_owned());
    let ctx = Context::builder().app_name("line_count").get_or_create()?;
    let lines = ctx.text_file(&path, 0)?;
    let total = lines.count()?;
    let with_word = lines
        .filter_with(word.clone(), |w, l| l.contains(w.as_str()))
        .count()?;
    println!(
        "{path}: {total} lines, {with_word} containing {word:?} ({} partitions)",
        lines.num_partitions()
    );
    ctx.stop()
}
