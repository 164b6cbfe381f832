//! The raw TCP baseline: what the same exchanges cost with plain tokio sockets and
//! nothing else. Frames are a 4-byte big-endian length, a kind byte and a payload.
//! The server handles each connection on one task: it reads whatever has arrived,
//! handles every complete frame in it, and writes all the answers in one call; a bulk
//! request is answered with that many unframed bytes written from one reused buffer.
//! The client keeps its socket on the calling task. `TCP_NODELAY` is set on both ends.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use crate::stats::OneWay;

/// Echo this frame back.
pub const ECHO: u8 = 0;
/// Count this frame; no answer.
pub const ONE_WAY: u8 = 1;
/// Answer with the number of `ONE_WAY` frames since the last `COUNT` (u64, little
/// endian) and reset it.
pub const COUNT: u8 = 2;

/// Answer with the number of bytes in the payload (u64, little endian), unframed.
pub const BULK: u8 = 3;

/// Size of read buffers and of the client's write batches.
pub const BUF: usize = 64 * 1024;
/// Size of each write and read of a bulk copy (flint's stream chunk size).
pub const BULK_BUF: usize = 256 * 1024;

/// A complete frame: length prefix, `kind`, `payload`.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(5 + payload.len());
    f.extend_from_slice(&(1 + payload.len() as u32).to_be_bytes());
    f.push(kind);
    f.extend_from_slice(payload);
    f
}

/// Length (prefix included) of the complete frame at the start of `buf`, if there is one.
fn complete(buf: &[u8]) -> Option<usize> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    (buf.len() >= 4 + len).then_some(4 + len)
}

/// Binds the baseline server on `127.0.0.1` (any free port) and serves in the
/// background; returns its address.
pub async fn start_server() -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Err(e) = serve(tcp).await {
                    eprintln!("rpc-bench: raw server connection failed: {e}");
                }
            });
        }
    });
    Ok(addr)
}

async fn serve(tcp: TcpStream) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    let (mut r, mut w) = tcp.into_split();
    let mut inb = BytesMut::with_capacity(BUF);
    let mut out: Vec<u8> = Vec::with_capacity(BUF);
    let mut count: u64 = 0;
    let mut bulk: Vec<u8> = Vec::new();
    loop {
        inb.reserve(BUF);
        if r.read_buf(&mut inb).await? == 0 {
            return Ok(());
        }
        while let Some(n) = complete(&inb) {
            match inb.get(4) {
                Some(&ECHO) => out.extend_from_slice(&inb[..n]),
                Some(&ONE_WAY) => count += 1,
                Some(&COUNT) => {
                    out.extend_from_slice(&frame(COUNT, &count.to_le_bytes()));
                    count = 0;
                }
                Some(&BULK) => {
                    let len = inb
                        .get(5..n)
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .map(u64::from_le_bytes)
                        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad bulk"))?;
                    if !out.is_empty() {
                        w.write_all(&out).await?;
                        out.clear();
                    }
                    if bulk.is_empty() {
                        bulk = vec![0x5a; BULK_BUF];
                    }
                    let mut left = len;
                    while left > 0 {
                        let k = left.min(BULK_BUF as u64) as usize;
                        w.write_all(&bulk[..k]).await?;
                        left -= k as u64;
                    }
                }
                _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "bad frame")),
            }
            inb.advance(n);
        }
        if !out.is_empty() {
            w.write_all(&out).await?;
            out.clear();
        }
    }
}

/// A connection to the baseline server.
pub struct Client {
    r: OwnedReadHalf,
    w: OwnedWriteHalf,
    inb: BytesMut,
}

impl Client {
    /// Connects to the server at `addr` with `TCP_NODELAY`.
    pub async fn connect(addr: SocketAddr) -> io::Result<Client> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (r, w) = tcp.into_split();
        Ok(Client {
            r,
            w,
            inb: BytesMut::with_capacity(BUF),
        })
    }

    /// Reads until at least one frame is complete; consumes every complete frame
    /// buffered and returns how many there were.
    async fn read_frames(&mut self) -> io::Result<usize> {
        loop {
            let mut n = 0;
            while let Some(len) = complete(&self.inb) {
                self.inb.advance(len);
                n += 1;
            }
            if n > 0 {
                return Ok(n);
            }
            self.inb.reserve(BUF);
            if self.r.read_buf(&mut self.inb).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads exactly one frame and returns it (prefix and kind included).
    async fn read_one(&mut self) -> io::Result<BytesMut> {
        loop {
            if let Some(len) = complete(&self.inb) {
                return Ok(self.inb.split_to(len));
            }
            self.inb.reserve(BUF);
            if self.r.read_buf(&mut self.inb).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Times `n` ping-pongs of a `payload`-byte echo frame, one at a time.
    pub async fn ping_pong(&mut self, n: usize, payload: usize) -> io::Result<Vec<Duration>> {
        let mut samples = Vec::with_capacity(n);
        let mut f = frame(ECHO, &vec![0u8; payload]);
        for i in 0..n {
            let seq = (i as u64).to_le_bytes();
            let k = payload.min(8);
            f[5..5 + k].copy_from_slice(&seq[..k]);
            let t = Instant::now();
            self.w.write_all(&f).await?;
            let echoed = self.read_one().await?;
            samples.push(t.elapsed());
            if echoed.get(5..5 + k) != Some(&seq[..k]) {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "wrong echo"));
            }
        }
        Ok(samples)
    }

    /// Sends `n` one-way frames of `payload` bytes, batched into writes of about
    /// [`BUF`] bytes, then asks for the count.
    pub async fn one_way(&mut self, n: u64, payload: usize) -> io::Result<OneWay> {
        let f = frame(ONE_WAY, &vec![7u8; payload]);
        let mut buf: Vec<u8> = Vec::with_capacity(BUF + f.len());
        let t = Instant::now();
        for _ in 0..n {
            buf.extend_from_slice(&f);
            if buf.len() >= BUF {
                self.w.write_all(&buf).await?;
                buf.clear();
            }
        }
        buf.extend_from_slice(&frame(COUNT, &[]));
        self.w.write_all(&buf).await?;
        let send_loop = t.elapsed();
        let reply = self.read_one().await?;
        let bytes: [u8; 8] = reply
            .get(5..)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad count reply"))?;
        Ok(OneWay {
            counted: u64::from_le_bytes(bytes),
            send_loop,
            total: t.elapsed(),
        })
    }

    /// Asks the server for `bytes` unframed bytes and reads them all into one reused
    /// buffer of [`BULK_BUF`] bytes; returns how many arrived.
    pub async fn bulk(&mut self, bytes: u64) -> io::Result<u64> {
        self.w.write_all(&frame(BULK, &bytes.to_le_bytes())).await?;
        let mut got = self.inb.len() as u64;
        self.inb.clear();
        let mut buf = vec![0u8; BULK_BUF];
        while got < bytes {
            let want = (bytes - got).min(BULK_BUF as u64) as usize;
            let n = self.r.read(&mut buf[..want]).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            got += n as u64;
        }
        Ok(got)
    }

    /// Runs `n` echo requests of `payload` bytes keeping `in_flight` outstanding:
    /// whenever answers arrive, as many new requests go out in one write.
    pub async fn pipelined(&mut self, n: u64, in_flight: u64, payload: usize) -> io::Result<u64> {
        let f = frame(ECHO, &vec![0u8; payload]);
        let mut buf: Vec<u8> = Vec::with_capacity(f.len() * in_flight as usize);
        let first = in_flight.min(n);
        for _ in 0..first {
            buf.extend_from_slice(&f);
        }
        self.w.write_all(&buf).await?;
        let (mut sent, mut done) = (first, 0u64);
        while done < n {
            let k = self.read_frames().await? as u64;
            done += k;
            let more = k.min(n - sent);
            if more > 0 {
                buf.clear();
                for _ in 0..more {
                    buf.extend_from_slice(&f);
                }
                self.w.write_all(&buf).await?;
                sent += more;
            }
        }
        Ok(done)
    }
}
