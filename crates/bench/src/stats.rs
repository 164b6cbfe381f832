//! Latency summaries (percentiles and mean in microseconds) and throughput rates.

use std::time::Duration;

use serde::Serialize;

/// Round-trip latencies of one series, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// How many round trips were timed (warm-up excluded).
    pub samples: usize,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Arithmetic mean.
    pub mean_us: f64,
    /// Fastest round trip.
    pub min_us: f64,
    /// Slowest round trip.
    pub max_us: f64,
}

impl Latency {
    /// Summarises `samples` (each one round trip); sorts them in place.
    pub fn from_samples(samples: &mut [Duration]) -> Latency {
        samples.sort_unstable();
        let n = samples.len();
        let us = |d: Duration| round2(d.as_secs_f64() * 1e6);
        let pct = |p: f64| {
            if n == 0 {
                return 0.0;
            }
            // Nearest-rank percentile.
            let rank = ((p / 100.0) * n as f64).ceil() as usize;
            us(samples[rank.clamp(1, n) - 1])
        };
        let total: Duration = samples.iter().sum();
        Latency {
            samples: n,
            p50_us: pct(50.0),
            p90_us: pct(90.0),
            p99_us: pct(99.0),
            p999_us: pct(99.9),
            mean_us: if n == 0 { 0.0 } else { us(total / n as u32) },
            min_us: samples.first().copied().map(us).unwrap_or(0.0),
            max_us: samples.last().copied().map(us).unwrap_or(0.0),
        }
    }
}

/// How many operations were done in how long, and the rate that makes. When a series
/// ran in several rounds, `count`, `seconds` and `per_sec` are those of the median
/// round and `rounds_per_sec` lists every round in the order they ran.
#[derive(Debug, Clone, Serialize)]
pub struct Rate {
    /// Operations completed (messages delivered, asks answered).
    pub count: u64,
    /// Wall-clock seconds from the first operation to proof of the last.
    pub seconds: f64,
    /// `count / seconds`.
    pub per_sec: f64,
    /// The rate of each round.
    pub rounds_per_sec: Vec<f64>,
}

impl Rate {
    /// The rate of `count` operations done in `elapsed`.
    pub fn new(count: u64, elapsed: Duration) -> Rate {
        let s = elapsed.as_secs_f64();
        let per_sec = if s > 0.0 {
            (count as f64 / s).round()
        } else {
            0.0
        };
        Rate {
            count,
            seconds: round4(s),
            per_sec,
            rounds_per_sec: vec![per_sec],
        }
    }

    /// The median round of `rounds` (the lower one of an even count), listing all.
    pub fn median(rounds: &[Rate]) -> Rate {
        let mut sorted: Vec<&Rate> = rounds.iter().collect();
        sorted.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
        let Some(mid) = sorted.get(sorted.len().saturating_sub(1) / 2) else {
            return Rate::new(0, Duration::ZERO);
        };
        Rate {
            rounds_per_sec: rounds.iter().map(|r| r.per_sec).collect(),
            ..(*mid).clone()
        }
    }
}

/// Bytes moved in how long. When a series ran in several rounds, the figures are
/// those of the median round and `rounds_gb_per_sec` lists every round in the order
/// they ran.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Bytes delivered.
    pub bytes: u64,
    /// Wall-clock seconds from the request until the last byte arrived.
    pub seconds: f64,
    /// Decimal gigabytes (10^9 bytes) per second.
    pub gb_per_sec: f64,
    /// Binary gibibytes (2^30 bytes) per second.
    pub gib_per_sec: f64,
    /// The rate of each round, GB/s.
    pub rounds_gb_per_sec: Vec<f64>,
}

impl Throughput {
    /// The rate of `bytes` moved in `elapsed`.
    pub fn new(bytes: u64, elapsed: Duration) -> Throughput {
        let s = elapsed.as_secs_f64();
        let per = |unit: f64| {
            if s > 0.0 {
                round4(bytes as f64 / s / unit)
            } else {
                0.0
            }
        };
        let gb = per(1e9);
        Throughput {
            bytes,
            seconds: round4(s),
            gb_per_sec: gb,
            gib_per_sec: per((1u64 << 30) as f64),
            rounds_gb_per_sec: vec![gb],
        }
    }

    /// The median round of `rounds` (the lower one of an even count), listing all.
    pub fn median(rounds: &[Throughput]) -> Throughput {
        let mut sorted: Vec<&Throughput> = rounds.iter().collect();
        sorted.sort_by(|a, b| a.gb_per_sec.total_cmp(&b.gb_per_sec));
        let Some(mid) = sorted.get(sorted.len().saturating_sub(1) / 2) else {
            return Throughput::new(0, Duration::ZERO);
        };
        Throughput {
            rounds_gb_per_sec: rounds.iter().map(|r| r.gb_per_sec).collect(),
            ..(*mid).clone()
        }
    }
}

/// The outcome of one one-way series.
#[derive(Debug, Clone, Copy)]
pub struct OneWay {
    /// How many messages the server counted.
    pub counted: u64,
    /// How long the sending loop took (until the last message was handed over: queued
    /// for flint, written to the socket for raw TCP).
    pub send_loop: Duration,
    /// From the first send until the count came back.
    pub total: Duration,
}

/// `a / b` to three decimals (0 when `b` is 0).
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        (a / b * 1000.0).round() / 1000.0
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut s: Vec<Duration> = (1..=100).rev().map(Duration::from_micros).collect();
        let l = Latency::from_samples(&mut s);
        assert_eq!(l.samples, 100);
        assert_eq!(l.p50_us, 50.0);
        assert_eq!(l.p99_us, 99.0);
        assert_eq!(l.p999_us, 100.0);
        assert_eq!(l.min_us, 1.0);
        assert_eq!(l.max_us, 100.0);
        assert_eq!(l.mean_us, 50.5);
    }

    #[test]
    fn empty_series_is_all_zero() {
        let l = Latency::from_samples(&mut []);
        assert_eq!(l.samples, 0);
        assert_eq!(l.p50_us, 0.0);
    }

    #[test]
    fn rates_and_ratios() {
        let r = Rate::new(1_000, Duration::from_millis(500));
        assert_eq!(r.per_sec, 2_000.0);
        let rounds = [
            Rate::new(300, Duration::from_secs(1)),
            Rate::new(100, Duration::from_secs(1)),
            Rate::new(200, Duration::from_secs(1)),
        ];
        let m = Rate::median(&rounds);
        assert_eq!(m.per_sec, 200.0);
        assert_eq!(m.rounds_per_sec, vec![300.0, 100.0, 200.0]);
        assert_eq!(Rate::median(&rounds[..2]).per_sec, 100.0);
        assert_eq!(Rate::median(&[]).count, 0);
        assert_eq!(ratio(3.0, 2.0), 1.5);
        let t = Throughput::new(2_000_000_000, Duration::from_secs(1));
        assert_eq!(t.gb_per_sec, 2.0);
        assert_eq!(t.gib_per_sec, 1.8626);
        let m = Throughput::median(&[
            Throughput::new(3, Duration::from_nanos(1)),
            Throughput::new(1, Duration::from_nanos(1)),
            Throughput::new(2, Duration::from_nanos(1)),
        ]);
        assert_eq!(m.bytes, 2);
        assert_eq!(m.rounds_gb_per_sec, vec![3.0, 1.0, 2.0]);
        assert_eq!(ratio(1.0, 0.0), 0.0);
    }
}
