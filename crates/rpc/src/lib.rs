//! flint's RPC environment, after Spark's `RpcEnv`: named endpoints in a process,
//! one-way `send` and request–reply `ask` (always with a deadline) on typed
//! [`EndpointRef`]s, over one TCP connection per peer with length-prefixed postcard
//! frames, a versioned handshake with optional shared-secret authentication and TLS,
//! and a file server for shipping binaries.
//!
//! This crate knows nothing of masters, workers or applications: those are endpoints
//! built on it elsewhere.
//!
//! ```no_run
//! use flint_rpc::{Ask, Context, Endpoint, Protocol, Reply, RpcConf, RpcEnv};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! enum CounterMsg { Add(u64), Get(Get) }
//! impl Protocol for CounterMsg { const NAME: &'static str = "example.counter/1"; }
//!
//! #[derive(Serialize, Deserialize)]
//! struct Get;
//! impl Ask for Get { type Reply = u64; }
//! impl From<Get> for CounterMsg { fn from(g: Get) -> Self { CounterMsg::Get(g) } }
//!
//! struct Counter(u64);
//! impl Endpoint for Counter {
//!     type Msg = CounterMsg;
//!     fn receive(&mut self, _: &Context<CounterMsg>, msg: CounterMsg) {
//!         if let CounterMsg::Add(n) = msg { self.0 += n }
//!     }
//!     fn receive_and_reply(&mut self, _: &Context<CounterMsg>, _: CounterMsg, reply: Reply) {
//!         reply.send(self.0)
//!     }
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let server = RpcEnv::server(RpcConf::default(), "127.0.0.1", 0).await?;
//! server.setup_endpoint("counter", Counter(0))?;
//! let client = RpcEnv::client(RpcConf::default())?;
//! let addr = server.address().unwrap().clone();
//! let counter = client.setup_endpoint_ref::<CounterMsg>(&addr, "counter").await?;
//! counter.send(CounterMsg::Add(2))?;
//! assert_eq!(counter.ask(Get).await?, 2);
//! # Ok(()) }
//! ```

pub mod address;
pub mod conf;
mod connection;
mod endpoint;
mod env;
pub mod error;
mod files;
pub mod frame;
pub mod handshake;
mod inbox;
pub mod log;
mod pipeline;
mod reference;
pub mod seal;
pub mod secret;
mod stream;
mod tls;

pub use address::{EndpointAddress, RpcAddress};
pub use conf::{RpcConf, RpcTimeout, Secret, TlsPaths};
pub use endpoint::{
    Ask, ConcurrentEndpoint, Context, Endpoint, InlineEndpoint, Message, Protocol, Reply, Responder,
};
pub use env::{ConnectionInfo, RpcEnv, ENDPOINT_VERIFIER};
pub use error::{AskError, RpcError};
pub use files::{parse_file_uri, FileMeta, FILE_SERVER};
pub use pipeline::{Pipeline, MAX_PIPELINE_WINDOW};
pub use reference::EndpointRef;
pub use stream::{IncomingStream, StreamError, StreamHandler, StreamSink};
