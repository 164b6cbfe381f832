//! Joins generated orders with generated customers: each order `(customer, amount)`
//! meets its customer's `(name, country)`, then the revenue per country. The answer is
//! checked against a single-process computation of the same data.
//! `cargo run -p flint --example join -- [ORDERS] [CUSTOMERS]`.
//!
//! Runs on the master given by `FLINT_MASTER`, else `local[*]`.

use std::collections::BTreeMap;

use flint::prelude::*;

const COUNTRIES: [&str; 5] = ["de", "fr", "jp", "br", "us"];

fn order(i: u64, customers: u64) -> (u64, u64) {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5555;
    x ^= x >> 29;
    // Some orders name a customer that does not exist (no match in the join).
    ((x % (customers + customers / 10)), 1 + x % 500)
}

fn customer(c: u64) -> (u64, (String, String)) {
    (
        c,
        (
            format!("customer-{c}"),
            COUNTRIES[(c % 5) as usize].to_string(),
        ),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ctx = Context::builder().app_name("join").get_or_create()?;
    let mut args = std::env::args().skip(1);
    let orders_n: u64 = args.next().map_or(Ok(200_000), |a| a.parse())?;
    let customers_n: u64 = args.next().map_or(Ok(5_000), |a| a.parse())?;
    let parts = ctx.default_parallelism() * 2;
    let orders = ctx
        .range(0, orders_n, parts)
        .map_with(customers_n, |c, i| order(i, *c));
    let customers = ctx.range(0, customers_n, parts).map(customer);
    let started = std::time::Instant::now();
    let joined = orders.join(&customers, parts);
    let by_country = joined
        .map(|(_, (amount, (_, country)))| (country, amount))
        .reduce_by_key(|a, b| a + b, 0)
        .collect_as_map()?;
    let matched = joined.count()?;
    let elapsed = started.elapsed();

    // The same, in one process.
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    let mut want_matched = 0;
    for i in 0..orders_n {
        let (c, amount) = order(i, customers_n);
        if c < customers_n {
            want_matched += 1;
            *want.entry(customer(c).1 .1).or_default() += amount;
        }
    }
    let got: BTreeMap<String, u64> = by_country.into_iter().collect();
    for (country, revenue) in &got {
        println!("{country}: {revenue}");
    }
    println!(
        "{matched} of {orders_n} orders matched {customers_n} customers in {:.3} s",
        elapsed.as_secs_f64()
    );
    if got != want || matched != want_matched {
        return Err(format!(
            "the join disagrees with a single-process computation: {got:?} ({matched}) vs {want:?} ({want_matched})"
        )
        .into());
    }
    println!("checked against a single-process computation: equal");
    ctx.stop()?;
    Ok(())
}
