//! A closure that captures fails `cargo build` with a message naming the `_with` form.
//! The check is a constant evaluated at monomorphization, so this builds a tiny crate
//! (against this flint, offline, with the workspace's lock file and its own target dir
//! under the workspace's target) rather than running `cargo check`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn build(dir: &Path, main: &str) -> (bool, String) {
    std::fs::write(dir.join("src/main.rs"), main).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--offline", "--quiet"])
        .current_dir(dir)
        .env(
            "CARGO_TARGET_DIR",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("compile-fail"),
        )
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn capturing_closures_fail_the_build_naming_the_with_form_and_clean_ones_build() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let flint = env!("CARGO_MANIFEST_DIR");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"capture-check\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n\
             [dependencies]\nflint = {{ path = {flint:?} }}\n\n[workspace]\n"
        ),
    )
    .unwrap();
    std::fs::copy(
        Path::new(flint).join("../../Cargo.lock"),
        dir.join("Cargo.lock"),
    )
    .unwrap();

    let (ok, stderr) = build(
        dir,
        "use flint::prelude::*;\n\
         fn main() -> flint::Result<()> {\n\
             let ctx = Context::builder().master(\"local\").create()?;\n\
             let k = 3u64;\n\
             let v = ctx.range(0, 10, 2).map(move |x| x * k).collect()?;\n\
             let w = ctx.range(0, 10, 2).filter(move |x| *x > k).count()?;\n\
             println!(\"{v:?} {w}\");\n\
             Ok(())\n\
         }\n",
    );
    assert!(!ok, "a capturing closure built");
    assert!(
        stderr.contains("flint: closures passed to map must not capture; pass what it needs with map_with(value, |v, x| ...)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "closures passed to filter must not capture; pass what it needs with filter_with"
        ),
        "{stderr}"
    );

    let (ok, stderr) = build(
        dir,
        "use flint::prelude::*;\n\
         fn main() -> flint::Result<()> {\n\
             let ctx = Context::builder().master(\"local\").create()?;\n\
             let v = ctx.range(0, 10, 2).map_with(3u64, |k, x| x * k).collect()?;\n\
             println!(\"{v:?}\");\n\
             Ok(())\n\
         }\n",
    );
    assert!(ok, "the _with form did not build:\n{stderr}");
}
