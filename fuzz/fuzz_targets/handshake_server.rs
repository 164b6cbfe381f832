//! Arbitrary bytes as the client side of `handshake::server`, over a `tokio::io::duplex`,
//! with and without a secret, in a current-thread runtime whose clock is paused (so the
//! timeout costs no wall time: the clock jumps to it as soon as everything is blocked).
//!
//! Input: flags byte ‖ the peer's bytes. Flag bit 0 set: the peer closes its write side
//! after its bytes (EOF); clear: it stays silent but open, so the server can only time
//! out. Everything the server writes is drained, so its writes never block.
//!
//! Checks: no panic; with a secret set the server never accepts (a peer without the
//! secret cannot answer the HMAC challenge over a fresh nonce); a peer that has closed
//! never leaves the server hanging until the timeout.
#![no_main]

use std::time::Duration;

use flint_rpc::handshake::{self, Established, HandshakeError};
use flint_rpc::Secret;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::time::error::Elapsed;

const TIMEOUT: Duration = Duration::from_secs(10);

thread_local! {
    static RT: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
}

/// `FLINT_FUZZ_DEBUG=1` prints both outcomes of every input (for reading a reproducer).
static DEBUG: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("FLINT_FUZZ_DEBUG").is_some());

type Outcome = Result<Result<Established, HandshakeError>, Elapsed>;

async fn run(bytes: &[u8], secret: Option<&Secret>, eof: bool) -> Outcome {
    let (peer, mut srv) = tokio::io::duplex(4096);
    let (mut rd, mut wr) = tokio::io::split(peer);
    let writer = async move {
        // Fails with BrokenPipe once the server has given up and dropped its end.
        let _ = wr.write_all(bytes).await;
        if eof {
            let _ = wr.shutdown().await;
        }
        wr // kept alive until everything is done
    };
    let drainer = async move {
        let mut sink = Vec::new();
        let _ = rd.read_to_end(&mut sink).await;
        sink
    };
    let server = async move {
        let r = tokio::time::timeout(TIMEOUT, handshake::server(&mut srv, secret)).await;
        drop(srv); // as a closed socket: the drainer sees EOF, the writer BrokenPipe
        r
    };
    let (_wr, _out, r) = tokio::join!(writer, drainer, server);
    r
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let eof = flags & 1 == 1;
    let secret = Secret::new(&b"fuzz-secret"[..]);
    RT.with(|rt| {
        let with = rt.block_on(run(bytes, Some(&secret), eof));
        if let Ok(Ok(est)) = &with {
            panic!("server with a secret accepted a random peer (listen = {:?})", est.listen);
        }
        if eof {
            assert!(with.is_ok(), "server hung on a closed peer (secret set)");
        }
        let without = rt.block_on(run(bytes, None, eof));
        if *DEBUG {
            eprintln!("eof={eof}\n  with secret: {with:?}\n  without:     {without:?}");
        }
        if eof {
            assert!(without.is_ok(), "server hung on a closed peer (no secret)");
        }
    });
});
