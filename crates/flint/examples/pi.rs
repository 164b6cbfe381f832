//! Estimates π by throwing darts at a square: `cargo run -p flint --example pi -- [slices]`.
//!
//! Runs on the master given by `FLINT_MASTER`, else `local[*]`.

use flint::prelude::*;

/// A well-mixed 64-bit hash (SplitMix64): a dart's coordinates from its number.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn unit(z: u64) -> f64 {
    (z >> 11) as f64 / (1u64 << 53) as f64
}

fn main() -> flint::Result<()> {
    let slices: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(16);
    let ctx = Context::builder().app_name("pi").get_or_create()?;
    let darts = 1_000_000u64 * u64::from(slices);
    let inside = ctx
        .range(0, darts, slices)
        .filter(|i| {
            let (x, y) = (unit(mix(*i)), unit(mix(i ^ 0x5555_5555_5555_5555)));
            x * x + y * y <= 1.0
        })
        .count()?;
    let pi = 4.0 * inside as f64 / darts as f64;
    println!(
        "Pi is roughly {pi:.6} ({darts} darts in {slices} tasks on {})",
        ctx.master()
    );
    ctx.stop()
}
