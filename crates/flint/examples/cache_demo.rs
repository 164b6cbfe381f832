//! An iterative job reusing a cached dataset: fits `y = a·x + b` to a million points by
//! gradient descent, one job per step over the same cached points.
//! `cargo run -p flint --example cache_demo -- [steps]`.
//!
//! The accumulator counts how often the points were generated: once per partition with
//! the cache, where every step would generate them again without it.

use std::time::Instant;

use flint::prelude::*;

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z ^ (z >> 31)
}

fn main() -> flint::Result<()> {
    let steps: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let ctx = Context::builder().app_name("cache_demo").get_or_create()?;
    let generated = ctx.accumulator("points generated");
    let n = 1_000_000u64;
    // Points on y = 3x + 1 with a little noise, x in [0, 1).
    let points = ctx
        .range(0, n, 0)
        .map_with(generated.clone(), |g, i| {
            g.add(1);
            let x = (mix(i) >> 11) as f64 / (1u64 << 53) as f64;
            let noise = ((mix(i ^ 0xabcd) >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.1;
            (x, 3.0 * x + 1.0 + noise)
        })
        .cache();
    let (mut a, mut b) = (0.0f64, 0.0f64);
    for step in 0..steps {
        let started = Instant::now();
        let (da, db) = points
            .map_with((a, b), |(a, b), (x, y)| {
                let err = a * x + b - y;
                (err * x, err)
            })
            .reduce(|p, q| (p.0 + q.0, p.1 + q.1))?
            .unwrap_or((0.0, 0.0));
        a -= 1.2 * da / n as f64;
        b -= 1.2 * db / n as f64;
        if step % 10 == 0 || step + 1 == steps {
            println!(
                "step {step:2}: a = {a:.4}, b = {b:.4} ({:.1} ms)",
                started.elapsed().as_secs_f64() * 1e3
            );
        }
    }
    println!(
        "fitted y = {a:.3}x + {b:.3}; points generated {} times for {n} points and {steps} steps",
        generated.value()
    );
    ctx.stop()
}
