//! Unit tests that look inside a context: caches, broadcast fetches.
#![allow(clippy::unwrap_used)]

use crate::prelude::*;

#[test]
fn placeholder() {
    let ctx = Context::builder().master("local[2]").create().unwrap();
    assert_eq!(ctx.range(0, 10, 2).count().unwrap(), 10);
    let _ = ctx.local_env();
}
