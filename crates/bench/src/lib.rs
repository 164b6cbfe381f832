//! flint's benchmarks. The `rpc-bench` binary measures the RPC layer (`flint-rpc`)
//! against a raw TCP baseline written with plain tokio sockets on loopback, with and
//! without sealed records: ask round trip latency, one-way message throughput and the
//! sender's peak memory, pipelined ask throughput, and bulk stream throughput.
//!
//! The pieces live here so the binary stays a thin driver:
//! - [`raw`]: the baseline's framing, server and client (bulk copy included);
//! - [`rpc`]: the flint endpoint, protocol and stream handler the benchmark talks to;
//! - [`stats`]: latency summaries and rates;
//! - [`machine`]: what the report says about the machine it ran on.

pub mod machine;
pub mod raw;
pub mod rpc;
pub mod stats;
