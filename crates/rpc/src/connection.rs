//! One TCP (or TLS) connection to a peer: a writer task draining the connection's
//! queues, a reader task splitting frames and routing them, and the tables of asks
//! awaiting replies and of open bulk streams.
//!
//! On plain TCP the reader (after routing one read, i.e. with the replies its inline
//! handlers queued) and a pipeline's push write the queue to the socket themselves when
//! nobody else is writing and the socket takes it without waiting ("direct writes");
//! the writer task takes over what is left. One writer at a time (`writing`), so
//! frames keep their order. At shutdown the writer drains the queue, within
//! `rpc.shutdown_drain_timeout`, before the connection closes.
//!
//! Failure accounting is exact: a request still in the queue when the connection dies
//! fails as *not delivered*; one already written fails as *connection lost*.
//!
//! Memory is bounded on both sides. The control queue has a byte budget
//! (`rpc.connection.max_queued_bytes`) charged with the memory the queue really holds:
//! small frames are packed into shared segments (charged their whole capacity), large
//! ones are queued as they are (charged their size). Written segments are kept for
//! reuse while the connection is busy (counted against the budget too, dropped once
//! the queue has been empty for a second or when room is needed), so a sender that
//! moves between threads reuses memory instead of filling another allocator arena. A
//! sender past the budget gets `Full` (or waits, with `send_async`), and a peer that lets our replies pile up past
//! it is cut off. Bulk
//! stream chunks wait in a small queue of their own, and the writer takes at most one
//! chunk between batches of control frames, so asks and heartbeats never wait behind
//! more than one chunk. The reader's buffers grow only with bytes that arrived; a frame
//! that has started must finish within `rpc.frame_timeout`; bytes held in partial
//! frames count against an env-wide cap.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::address::RpcAddress;
use crate::endpoint::Event;
use crate::env::{InboxCache, RpcEnv};
use crate::frame::{self, FailureKind, FrameCodec, Header};
use crate::handshake::{self, ClientOptions, ServerAuth};
use crate::inbox::Posted;
use crate::log::quote;
use crate::pipeline::{split_pipe_id, PipeShared};
use crate::seal::{Opener, Sealer, SessionKeys};
use crate::stream::StreamTable;

/// A frame waiting to be written; `ask` is set for requests so an unsent one can be
/// failed as not delivered.
pub(crate) struct Out {
    pub(crate) bytes: Bytes,
    pub(crate) ask: Option<u64>,
}

/// How a pending ask ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    Reply {
        ty: u32,
        body: Bytes,
    },
    Failed(FailureKind, String),
    NotSent(String),
    Lost(String),
    /// Its deadline passed (found by the connection's sweeper).
    TimedOut,
}

/// How a peer broke the protocol; the connection that carried it is closed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProtocolError {
    /// A frame's header could not be read.
    #[error(transparent)]
    Header(#[from] frame::HeaderError),
    /// The consumer of a stream sent data on it.
    #[error("stream {sid}: data sent by its consumer")]
    DataFromConsumer { sid: u64 },
    /// The producer of a stream sent more chunks than it had credit for.
    #[error("stream {sid}: the peer sent more chunks than it had credit for")]
    OverCredit { sid: u64 },
    /// A stream id was opened twice.
    #[error("stream {sid} opened twice")]
    OpenedTwice { sid: u64 },
}

/// Why an outbound connection could not be opened.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("the RPC environment is shutting down")]
    ShuttingDown,
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: RpcAddress,
        source: std::io::Error,
    },
    #[error("TLS with {target} failed: {source}")]
    Tls {
        target: RpcAddress,
        source: std::io::Error,
    },
    #[error("handshake with {target} failed: {source}")]
    Handshake {
        target: RpcAddress,
        source: handshake::HandshakeError,
    },
    #[error("connecting to {target} took over {after:?}; this timeout is controlled by {setting}")]
    Timeout {
        target: RpcAddress,
        after: std::time::Duration,
        setting: &'static str,
    },
}

/// Why a frame could not be queued.
pub(crate) enum EnqueueError {
    /// The connection is closed; the frame is given back.
    Closed(Out),
    /// The queue's byte budget is used up; the frame is given back.
    Full(Out),
}

/// Why [`Connection::enqueue_small`] queued nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The connection is closed.
    Closed,
    /// The queue's byte budget is used up.
    Full,
}

/// One bulk frame: its length prefix and header, and the chunk that follows them,
/// written from the chunk's own buffer without being copied into a frame.
pub(crate) struct BulkFrame {
    pub(crate) head: Vec<u8>,
    pub(crate) body: Bytes,
}

/// Fixed cost charged per frame queued on its own, for the queue's own node.
const PER_FRAME: usize = 64;
/// Chunks of all streams of a connection that may wait for the writer.
const BULK_QUEUE: usize = 4;
/// Capacity of a segment of packed small frames.
const SEGMENT: usize = 64 * 1024;
/// Capacity of the first segment of an idle queue: one message to an otherwise idle
/// peer (a heartbeat, a single ask) holds no more than this.
const FIRST_SEGMENT: usize = 4 * 1024;
/// Frames of at least this many bytes are queued on their own, not copied into a
/// segment.
pub(crate) const LARGE_FRAME: usize = 16 * 1024;
/// Spare segments are dropped once the control queue has been empty this long. Not at
/// once: a sender that pauses (to ask, say) and goes on would allocate them anew, and
/// the allocator might then take new memory for them in another thread's arena.
const SPARE_IDLE: std::time::Duration = std::time::Duration::from_secs(1);
/// Bytes the writer takes from the control queue per batch: it releases budget (and
/// returns segments) in steps of this size.
const TAKE_BYTES: usize = 256 * 1024;
/// Items the writer takes per batch (one `writev` holds at most this many).
const TAKE_ITEMS: usize = 64;

/// An entry of the control queue.
enum Queued {
    /// Small frames packed back to back. `asks` are the request ids among them.
    Packed {
        buf: BytesMut,
        asks: Vec<u64>,
        frames: usize,
        cost: usize,
    },
    /// One large frame.
    Frame {
        bytes: Bytes,
        ask: Option<u64>,
        cost: usize,
    },
}

impl Queued {
    fn bytes(&self) -> &[u8] {
        match self {
            Queued::Packed { buf, .. } => buf,
            Queued::Frame { bytes, .. } => bytes,
        }
    }

    fn cost(&self) -> usize {
        match self {
            Queued::Packed { cost, .. } | Queued::Frame { cost, .. } => *cost,
        }
    }
}

/// The control queue: frames in order, spare segments, and whether the writer has
/// stopped taking (then nothing more is accepted).
#[derive(Default)]
struct ControlQueue {
    items: VecDeque<Queued>,
    spare: Vec<BytesMut>,
    /// Capacity of the spare segments: counted with the queued bytes against the
    /// budget, so the queue never holds more than its budget, spare memory included.
    spare_bytes: usize,
    closed: bool,
    /// Someone is writing to the socket: the writer task, or a caller writing directly
    /// ([`Connection::end_batch`]). Whoever holds it is the only one writing, so frames
    /// go out in queue order and never interleave.
    writing: bool,
    /// The writer task found `writing` held and waits to be woken when it is released.
    writer_waiting: bool,
    /// The socket, for direct writes (plain TCP without sealing only; `None` before the
    /// connection is up and after it ends).
    direct: Option<Arc<OwnedWriteHalf>>,
    /// A batch buffer kept for direct writes.
    scratch: Vec<Queued>,
    /// Whether frames are sealed on this connection; then the sealer is kept here (and
    /// taken by whoever holds `writing` while it seals).
    sealed: bool,
    sealer: Option<Sealer>,
    /// Sealed bytes a direct write could not write without blocking: they go out before
    /// anything else, written by the writer task.
    sealed_left: Vec<u8>,
    /// A buffer kept for sealing direct writes.
    seal_buf: Vec<u8>,
}

/// What the writer task found in the control queue.
enum Took {
    /// Frames to write (it now holds `writing`).
    Batch,
    /// Sealed bytes left over by a direct write, to write before anything else (it now
    /// holds `writing`; [`Connection::left_written`] gives it back).
    Leftover(Vec<u8>),
    /// Nothing queued.
    Empty,
    /// A direct writer holds `writing`; it wakes the writer task when done.
    Busy,
}

/// Rounds of a direct write: a caller that writes its frames directly also writes
/// what others queued meanwhile, up to this many times, then leaves the rest to the
/// writer task.
const DIRECT_ROUNDS: usize = 4;

/// The asks of a connection awaiting replies: single asks by request id, and the
/// [`Pipeline`](crate::Pipeline)s registered on it by pipeline number (their request
/// ids carry [`PIPE_BIT`], the number and a sequence number, see [`pipe_id`]).
///
/// Deadlines of single asks are kept here too and checked by the connection's sweeper
/// task ([`sweep_loop`]) instead of a timer per ask: it sleeps until the earliest
/// deadline it knows of, fails every ask whose deadline has passed, and sleeps again
/// until the next one, but at least [`SWEEP_GAP`] later. So an ask fails at its
/// deadline or at most `SWEEP_GAP` (plus scheduling delay) after it.
#[derive(Default)]
struct PendingTable {
    asks: HashMap<u64, Waiter, BuildHasherDefault<IdHasher>>,
    pipes: HashMap<u32, Arc<PipeShared>>,
    /// When the sweeper is due (`None`: nothing pending that it knows of).
    sweep_at: Option<Instant>,
    /// Set when the connection has failed what was pending: nothing registers after.
    closed: bool,
}

/// A single ask awaiting its reply.
struct Waiter {
    tx: oneshot::Sender<Outcome>,
    deadline: Instant,
}

/// Hashes request ids (unique integers from a counter) with one multiplication
/// instead of SipHash: the table is keyed by ids this process made, not by peer input.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The least time between two sweeps of a connection's ask deadlines: the most an
/// ask's timeout may fire late (besides scheduling delay) when many expire together.
pub(crate) const SWEEP_GAP: std::time::Duration = std::time::Duration::from_millis(5);

/// Shared state of one connection.
pub(crate) struct Connection {
    pub(crate) id: u64,
    peer: RpcAddress,
    control: Mutex<ControlQueue>,
    /// Wakes the writer when the control queue stops being empty.
    work: Notify,
    bulk: mpsc::Sender<BulkFrame>,
    queued: AtomicUsize,
    budget: usize,
    room: Notify,
    pending: Mutex<PendingTable>,
    /// Wakes the sweeper when an ask with an earlier deadline than it knew of registers.
    sweep: Notify,
    pub(crate) streams: StreamTable,
    pub(crate) closed: CancellationToken,
    max_frame: usize,
    dropped_one_way: AtomicBool,
    cut_off: AtomicBool,
    /// The key id an inbound peer proved (keyring authentication), if any.
    key_id: Option<Arc<str>>,
    /// Whether direct writes are possible (a socket is installed): batches are only
    /// begun then.
    direct_on: AtomicBool,
    /// Callers between [`Connection::begin_batch`] and [`Connection::end_batch`]: while
    /// there are any, queueing a frame does not wake the writer task, because the last
    /// of them writes the queue to the socket itself. An atomic, not under the queue's
    /// lock, so that a reader's batch with nothing to write costs no lock (queuers read
    /// it under the lock after charging `queued`; `end_batch` reads `queued` after
    /// leaving: one of the two sees the other).
    deferred: std::sync::atomic::AtomicU32,
}

/// Unregisters a pending ask when dropped unless forgotten: a caller that gives up
/// waiting for room in the queue (its deadline passed) leaves nothing behind.
pub(crate) struct Unregister<'a>(pub(crate) &'a Connection, pub(crate) u64);

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.0.unregister(self.1);
    }
}

/// The receiving end of a connection's bulk queue, owned by its writer.
pub(crate) struct Queues {
    bulk: mpsc::Receiver<BulkFrame>,
}

impl Connection {
    pub(crate) fn new(
        id: u64,
        peer: RpcAddress,
        env: &RpcEnv,
        parent: &CancellationToken,
        key_id: Option<Arc<str>>,
    ) -> (Arc<Self>, Queues) {
        let (bulk, bulk_rx) = mpsc::channel(BULK_QUEUE);
        let conf = &env.inner.conf;
        let conn = Connection {
            id,
            peer,
            control: Mutex::new(ControlQueue::default()),
            work: Notify::new(),
            bulk,
            queued: AtomicUsize::new(0),
            budget: conf.max_queued_bytes,
            room: Notify::new(),
            pending: Mutex::new(PendingTable::default()),
            sweep: Notify::new(),
            streams: StreamTable::default(),
            closed: parent.child_token(),
            max_frame: conf.max_message_size,
            dropped_one_way: AtomicBool::new(false),
            cut_off: AtomicBool::new(false),
            key_id,
            direct_on: AtomicBool::new(false),
            deferred: std::sync::atomic::AtomicU32::new(0),
        };
        let conn = Arc::new(conn);
        env.inner.tracker.spawn(sweep_loop(conn.clone()));
        (conn, Queues { bulk: bulk_rx })
    }

    /// The peer's address: its listening address if it has one, else its socket address.
    pub(crate) fn peer(&self) -> &RpcAddress {
        &self.peer
    }

    /// The key id this inbound peer proved, when it authenticated by key id.
    pub(crate) fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    pub(crate) fn max_frame(&self) -> usize {
        self.max_frame
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Bytes queued and not yet written.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// The byte budget of the control queue.
    pub(crate) fn budget(&self) -> usize {
        self.budget
    }

    /// Queues a frame unless the connection is closed or its budget is used up. A frame
    /// larger than the whole budget is accepted when the queue is empty, so that any
    /// message within `rpc.message.max_size` can be sent.
    ///
    /// A small frame is copied into the segment at the queue's tail if it has room
    /// (that memory is already charged); otherwise a new segment is charged its whole
    /// capacity. A large frame is charged its size plus [`PER_FRAME`].
    pub(crate) fn try_enqueue(&self, out: Out) -> Result<(), EnqueueError> {
        let len = out.bytes.len();
        if len < LARGE_FRAME {
            let asks: &[u64] = match &out.ask {
                Some(id) => std::slice::from_ref(id),
                None => &[],
            };
            return match self.enqueue_small(&out.bytes, 1, asks) {
                Ok(()) => Ok(()),
                Err(Refused::Closed) => Err(EnqueueError::Closed(out)),
                Err(Refused::Full) => Err(EnqueueError::Full(out)),
            };
        }
        let mut q = self.control.lock();
        if q.closed {
            return Err(EnqueueError::Closed(out));
        }
        let was_empty = q.items.is_empty() && self.deferred.load(Ordering::SeqCst) == 0;
        let cost = len + PER_FRAME;
        if !self.charge(&mut q, cost) {
            return Err(EnqueueError::Full(out));
        }
        q.items.push_back(Queued::Frame {
            bytes: out.bytes,
            ask: out.ask,
            cost,
        });
        drop(q);
        if was_empty {
            self.work.notify_one();
        }
        Ok(())
    }

    /// Queues `frames` small frames (together under [`LARGE_FRAME`] bytes), of which
    /// `asks` are the requests, copying them into the segment at the queue's tail if
    /// it has room (that memory is already charged) or into a new segment charged its
    /// whole capacity: all of them, or none.
    pub(crate) fn enqueue_small(
        &self,
        bytes: &[u8],
        frames: usize,
        asks: &[u64],
    ) -> Result<(), Refused> {
        let len = bytes.len();
        debug_assert!(len < LARGE_FRAME);
        let mut q = self.control.lock();
        if q.closed {
            return Err(Refused::Closed);
        }
        let first = q.items.is_empty();
        let was_empty = first && self.deferred.load(Ordering::SeqCst) == 0;
        if let Some(Queued::Packed {
            buf,
            asks: ids,
            frames: n,
            ..
        }) = q.items.back_mut()
        {
            if buf.capacity() - buf.len() >= len {
                buf.extend_from_slice(bytes);
                ids.extend_from_slice(asks);
                *n += frames;
                return Ok(());
            }
        }
        let cap = if first {
            FIRST_SEGMENT.max(len)
        } else {
            SEGMENT
        };
        let mut buf = match q.spare.pop() {
            // A spare segment is memory already counted: it just moves into the queue.
            Some(b) if cap == SEGMENT => {
                q.spare_bytes -= SEGMENT;
                self.queued.fetch_add(SEGMENT, Ordering::SeqCst);
                b
            }
            other => {
                q.spare.extend(other);
                if !self.charge(&mut q, cap) {
                    return Err(Refused::Full);
                }
                BytesMut::with_capacity(cap)
            }
        };
        buf.extend_from_slice(bytes);
        q.items.push_back(Queued::Packed {
            buf,
            asks: asks.to_vec(),
            frames,
            cost: cap,
        });
        drop(q);
        if was_empty {
            self.work.notify_one();
        }
        Ok(())
    }

    /// Charges `cost` bytes of new memory to the budget if it allows, dropping spare
    /// segments to make room first (spare memory never refuses a frame). Called with the
    /// control queue locked, so chargers do not race each other; the writer only ever
    /// releases.
    fn charge(&self, q: &mut ControlQueue, cost: usize) -> bool {
        let current = self.queued.load(Ordering::Acquire);
        while current + q.spare_bytes + cost > self.budget {
            match q.spare.pop() {
                Some(b) => q.spare_bytes -= b.capacity(),
                None => break,
            }
        }
        if current + q.spare_bytes > 0 && current + q.spare_bytes + cost > self.budget {
            return false;
        }
        self.queued.fetch_add(cost, Ordering::SeqCst);
        true
    }

    /// Moves up to a batch of queued frames into `into` (for the writer task), taking
    /// `writing` when there are any; see [`Took`].
    fn take(&self, into: &mut Vec<Queued>) -> Took {
        let mut q = self.control.lock();
        if q.writing {
            q.writer_waiting = true;
            return Took::Busy;
        }
        if !q.sealed_left.is_empty() {
            q.writing = true;
            return Took::Leftover(std::mem::take(&mut q.sealed_left));
        }
        take_locked(&mut q, into);
        if into.is_empty() {
            Took::Empty
        } else {
            q.writing = true;
            Took::Batch
        }
    }

    /// Takes `writing` for the writer task (to write a bulk chunk): `Batch` when it has
    /// it, `Busy` if a direct writer holds it (it wakes the writer task when done),
    /// `Leftover` if sealed bytes must go first.
    fn acquire(&self) -> Took {
        let mut q = self.control.lock();
        if q.writing {
            q.writer_waiting = true;
            Took::Busy
        } else if !q.sealed_left.is_empty() {
            q.writing = true;
            Took::Leftover(std::mem::take(&mut q.sealed_left))
        } else {
            q.writing = true;
            Took::Batch
        }
    }

    /// The writer task wrote the leftover sealed bytes `buf`: gives `writing` back and
    /// keeps the buffer for sealing.
    fn left_written(&self, mut buf: Vec<u8>) {
        let mut q = self.control.lock();
        q.writing = false;
        if q.seal_buf.capacity() == 0 {
            buf.clear();
            q.seal_buf = buf;
        }
    }

    /// Takes the sealer (the holder of `writing` only), to seal outside the lock.
    fn take_sealer(&self) -> Option<Sealer> {
        self.control.lock().sealer.take()
    }

    fn put_sealer(&self, sealer: Sealer) {
        self.control.lock().sealer = Some(sealer);
    }

    /// Gives `writing` back (the writer task, after a bulk chunk).
    fn unacquire(&self) {
        self.control.lock().writing = false;
    }

    /// Wakes the writer task (shutdown: an idle writer then sees it and drains).
    pub(crate) fn wake_writer(&self) {
        self.work.notify_one();
    }

    /// Installs the connection's sealer (if its frames are sealed) and, for plain TCP,
    /// the socket for direct writes by callers.
    fn install(&self, sock: Option<Arc<OwnedWriteHalf>>, sealer: Option<Sealer>) {
        let mut q = self.control.lock();
        q.sealed = sealer.is_some();
        q.sealer = sealer;
        if !q.closed {
            self.direct_on.store(sock.is_some(), Ordering::SeqCst);
            q.direct = sock;
        }
    }

    /// Starts a batch of frames this caller queues and then writes itself (see
    /// [`end_batch`](Self::end_batch)): queueing them wakes no writer task. Only for
    /// callers that do not wait in between (a reader routing one read's frames, a
    /// pipeline's push); the guard ends the batch when dropped.
    pub(crate) fn begin_batch(&self) -> BatchGuard<'_> {
        let on = self.direct_on.load(Ordering::Relaxed);
        if on {
            self.deferred.fetch_add(1, Ordering::SeqCst);
        }
        BatchGuard { conn: self, on }
    }

    /// Ends a batch: the last caller in a batch writes the queue to the socket itself
    /// if nobody else is writing and the socket takes it without waiting; what it
    /// cannot write at once goes back to the front of the queue for the writer task.
    fn end_batch(&self) {
        if self.deferred.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        // No unlocked "nothing queued" shortcut here: an enqueuer that saw this batch
        // open (and so woke no writer) may have read `deferred` before our decrement
        // but not yet charged `queued`; only the lock orders us after its push. A
        // shortcut on `queued == 0` stranded such a frame with no writer woken (a
        // stream's last credit, so both sides waited forever).
        let mut q = self.control.lock();
        if q.items.is_empty() || q.writing || self.deferred.load(Ordering::SeqCst) > 0 {
            return;
        }
        let sock = match q.direct.clone() {
            // Sealed bytes left over from a write that would have blocked go first:
            // the writer task writes them.
            Some(sock) if q.sealed_left.is_empty() => sock,
            _ => {
                drop(q);
                self.work.notify_one();
                return;
            }
        };
        let mut batch = std::mem::take(&mut q.scratch);
        let mut wake = false;
        for round in 0..DIRECT_ROUNDS {
            q.writing = true;
            take_locked(&mut q, &mut batch);
            let outcome = if q.sealed {
                let sealer = q.sealer.take();
                let buf = std::mem::take(&mut q.seal_buf);
                drop(q);
                let (sealer, buf, r) = seal_and_write(&sock, &batch, sealer, buf);
                q = self.control.lock();
                q.sealer = sealer;
                r.map(|written| {
                    // Every frame of the batch is sealed: what the socket did not take
                    // is written first by whoever writes next (the writer task).
                    let cost = release_locked(&mut q, &mut batch);
                    let blocked = written < buf.len();
                    if blocked {
                        let mut left = buf;
                        left.drain(..written);
                        q.sealed_left = left;
                    } else {
                        let mut buf = buf;
                        buf.clear();
                        q.seal_buf = buf;
                    }
                    (cost, blocked)
                })
            } else {
                drop(q);
                let r = write_now(&sock, &batch);
                q = self.control.lock();
                r.map(|written| put_back(&mut q, &mut batch, written))
            };
            let (cost, blocked) = match outcome {
                Ok(done) => done,
                Err(e) => {
                    // The connection is broken; the writer task and the reader end it.
                    tracing::debug!(peer = %self.peer, "direct write failed: {e}");
                    let cost = release_locked(&mut q, &mut batch);
                    q.writing = false;
                    q.writer_waiting = false;
                    q.scratch = batch;
                    drop(q);
                    self.written(cost);
                    self.closed.cancel();
                    return;
                }
            };
            q.writing = false;
            if std::mem::take(&mut q.writer_waiting) {
                wake = true;
            }
            if cost > 0 {
                // Release the budget without holding the lock across the wake-ups.
                drop(q);
                self.written(cost);
                q = self.control.lock();
            }
            if blocked {
                wake = true;
                break;
            }
            if q.items.is_empty() || q.writing || self.deferred.load(Ordering::SeqCst) > 0 {
                break;
            }
            if round + 1 == DIRECT_ROUNDS {
                // The socket is full (or we have done our share): the writer task
                // waits for it.
                wake = true;
                break;
            }
        }
        q.scratch = batch;
        drop(q);
        if wake {
            self.work.notify_one();
        }
    }

    /// Whether spare segments are held.
    fn has_spare(&self) -> bool {
        self.control.lock().spare_bytes > 0
    }

    /// Drops the spare segments (the connection has been idle): an idle connection
    /// holds nothing.
    fn drop_spare(&self) {
        let mut q = self.control.lock();
        q.spare.clear();
        q.spare_bytes = 0;
    }

    /// Releases the budget of a written batch, keeps its segments for reuse and gives
    /// `writing` back (the writer task's).
    fn release(&self, batch: &mut Vec<Queued>) {
        let cost = {
            let mut q = self.control.lock();
            q.writing = false;
            release_locked(&mut q, batch)
        };
        self.written(cost);
    }

    /// Queues a frame, waiting for room in the budget; fails only when the connection
    /// closes.
    pub(crate) async fn enqueue_wait(&self, mut out: Out) -> Result<(), Out> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.try_enqueue(out) {
                Ok(()) => return Ok(()),
                Err(EnqueueError::Closed(o)) => return Err(o),
                Err(EnqueueError::Full(o)) => out = o,
            }
            tokio::select! {
                _ = room => {}
                _ = self.closed.cancelled() => return Err(out),
            }
        }
    }

    fn written(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
        self.room.notify_waiters();
    }

    /// Queues one bulk frame, waiting for room in the small bulk queue.
    pub(crate) async fn enqueue_bulk(&self, frame: BulkFrame) -> Result<(), ()> {
        tokio::select! {
            r = self.bulk.send(frame) => r.map_err(|_| ()),
            _ = self.closed.cancelled() => Err(()),
        }
    }

    /// Queues a frame this side owes the peer (a reply, a failure, stream control).
    /// If the peer lets such frames pile up past the budget it is not reading: it is
    /// cut off rather than allowed to grow our memory.
    pub(crate) fn send_owed(&self, bytes: Vec<u8>) {
        let len = bytes.len();
        if len < LARGE_FRAME {
            return self.send_owed_small(&bytes);
        }
        match self.try_enqueue(Out {
            bytes: bytes.into(),
            ask: None,
        }) {
            Ok(()) => {}
            Err(EnqueueError::Closed(_)) => {
                tracing::debug!(peer = %self.peer, "reply dropped: connection closed")
            }
            Err(EnqueueError::Full(_)) => self.not_reading(len),
        }
    }

    /// [`send_owed`](Self::send_owed) for a frame under [`LARGE_FRAME`] bytes, copied
    /// from `frame`.
    pub(crate) fn send_owed_small(&self, frame: &[u8]) {
        match self.enqueue_small(frame, 1, &[]) {
            Ok(()) => {}
            Err(Refused::Closed) => {
                tracing::debug!(peer = %self.peer, "reply dropped: connection closed")
            }
            Err(Refused::Full) => self.not_reading(frame.len()),
        }
    }

    /// Cuts the peer off: what we owe it passed the budget, so it does not read.
    fn not_reading(&self, len: usize) {
        if !self.cut_off.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                peer = %self.peer,
                "closing connection with {}: it does not read its replies ({} bytes queued; {} more would pass rpc.connection.max_queued_bytes = {})",
                self.peer,
                self.queued_bytes(),
                len,
                self.budget
            );
        }
        self.closed.cancel();
    }

    /// Registers a pending ask before its frame is queued; it fails with
    /// [`Outcome::TimedOut`] once `deadline` has passed (see [`PendingTable`]).
    pub(crate) fn register(&self, id: u64, deadline: Instant) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        let mut p = self.pending.lock();
        if p.closed {
            drop(p);
            let _ = tx.send(Outcome::Lost("the connection closed".into()));
            return rx;
        }
        p.asks.insert(id, Waiter { tx, deadline });
        if p.sweep_at.is_none_or(|at| deadline < at) {
            p.sweep_at = Some(deadline);
            drop(p);
            self.sweep.notify_one();
        }
        rx
    }

    /// Fails the asks whose deadline has passed; returns when to sweep next.
    fn sweep_expired(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut expired = Vec::new();
        let mut p = self.pending.lock();
        let mut next: Option<Instant> = None;
        for (id, w) in &p.asks {
            if w.deadline <= now {
                expired.push(*id);
            } else if next.is_none_or(|n| w.deadline < n) {
                next = Some(w.deadline);
            }
        }
        let txs: Vec<_> = expired
            .iter()
            .filter_map(|id| p.asks.remove(id))
            .map(|w| w.tx)
            .collect();
        p.sweep_at = next.map(|n| n.max(now + SWEEP_GAP));
        let at = p.sweep_at;
        drop(p);
        for tx in txs {
            let _ = tx.send(Outcome::TimedOut);
        }
        at
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.pending.lock().asks.remove(&id);
    }

    /// Registers a pipeline: replies to request ids made by [`pipe_id`] with its
    /// number go to `shared`. A connection that ends fails the pipeline's requests
    /// it carried and forgets it.
    pub(crate) fn register_pipe(&self, no: u32, shared: Arc<PipeShared>) -> bool {
        let mut p = self.pending.lock();
        if !p.closed {
            p.pipes.insert(no, shared);
        }
        !p.closed
    }

    /// Resolves when the writer has released budget (see [`Connection::enqueue_wait`]).
    pub(crate) fn room(&self) -> tokio::sync::futures::Notified<'_> {
        self.room.notified()
    }

    /// Queues one large frame (at least [`LARGE_FRAME`] bytes), request `ask`.
    pub(crate) fn enqueue_large(&self, bytes: Bytes, ask: u64) -> Result<(), Refused> {
        match self.try_enqueue(Out {
            bytes,
            ask: Some(ask),
        }) {
            Ok(()) => Ok(()),
            Err(EnqueueError::Closed(_)) => Err(Refused::Closed),
            Err(EnqueueError::Full(_)) => Err(Refused::Full),
        }
    }

    pub(crate) fn unregister_pipe(&self, no: u32) {
        self.pending.lock().pipes.remove(&no);
    }

    /// Completes the asks answered by one read's frames, taking the pending table's
    /// lock once for all of them (and each pipeline's lock once per run of its replies).
    fn complete_all(&self, done: &mut Vec<(u64, Outcome)>) {
        if done.is_empty() {
            return;
        }
        let mut ready = Vec::new();
        let mut woken: Vec<std::task::Waker> = Vec::new();
        {
            let pending = &mut *self.pending.lock();
            let mut run: Option<(u32, Option<Arc<PipeShared>>)> = None;
            let mut batch: Vec<(u32, Outcome)> = Vec::new();
            for (id, outcome) in done.drain(..) {
                if let Some((no, seq)) = split_pipe_id(id) {
                    if run.as_ref().map(|r| r.0) != Some(no) {
                        if let Some((_, Some(p))) = &run {
                            woken.extend(p.put_all(self.id, &mut batch));
                        }
                        batch.clear();
                        run = Some((no, pending.pipes.get(&no).cloned()));
                    }
                    batch.push((seq, outcome));
                    continue;
                }
                match pending.asks.remove(&id) {
                    Some(w) => ready.push((w.tx, outcome)),
                    None => {
                        tracing::debug!(peer = %self.peer, id, "reply for an ask no longer waiting (timed out?)")
                    }
                }
            }
            if let Some((_, Some(p))) = &run {
                woken.extend(p.put_all(self.id, &mut batch));
            }
        }
        for (tx, outcome) in ready {
            let _ = tx.send(outcome);
        }
        for w in woken {
            w.wake();
        }
    }

    pub(crate) fn send_failure(&self, id: u64, kind: FailureKind, message: &str) {
        match frame::encode_raw(&Header::Failure { id, kind, message }, &[]) {
            Ok(bytes) => self.send_owed(bytes),
            Err(e) => tracing::error!("cannot encode a failure reply: {e}"),
        }
    }

    fn fail_pending(&self, reason: &str) {
        let (asks, pipes): (Vec<_>, Vec<_>) = {
            let mut p = self.pending.lock();
            p.closed = true;
            (p.asks.drain().collect(), p.pipes.drain().collect())
        };
        for (_, w) in asks {
            let _ = w.tx.send(Outcome::Lost(reason.to_string()));
        }
        for (_, pipe) in pipes {
            pipe.fail_sent_on(self.id, reason);
        }
    }

    /// Fails everything still queued: asks as not delivered, one-way messages logged.
    /// The queue accepts nothing afterwards.
    fn fail_queued(&self, q: &mut Queues, reason: &str) {
        q.bulk.close();
        let items: Vec<Queued> = {
            let mut c = self.control.lock();
            c.closed = true;
            c.direct = None;
            c.spare.clear();
            c.spare_bytes = 0;
            c.items.drain(..).collect()
        };
        let mut one_way = 0usize;
        let mut unsent = Vec::new();
        for item in items {
            self.written(item.cost());
            match item {
                Queued::Packed { asks, frames, .. } => {
                    one_way += frames - asks.len();
                    unsent.extend(
                        asks.into_iter()
                            .map(|id| (id, Outcome::NotSent(reason.to_string()))),
                    );
                }
                Queued::Frame { ask: Some(id), .. } => {
                    unsent.push((id, Outcome::NotSent(reason.to_string())))
                }
                Queued::Frame { ask: None, .. } => one_way += 1,
            }
        }
        self.complete_all(&mut unsent);
        while q.bulk.try_recv().is_ok() {}
        if one_way > 0 && !self.dropped_one_way.swap(true, Ordering::Relaxed) {
            tracing::warn!(peer = %self.peer, "{one_way} one-way message(s) to {} not delivered: {reason}", self.peer);
        }
    }
}

/// Moves up to a batch of queued frames into `into`.
fn take_locked(q: &mut ControlQueue, into: &mut Vec<Queued>) {
    let mut bytes = 0;
    while bytes < TAKE_BYTES && into.len() < TAKE_ITEMS {
        match q.items.pop_front() {
            Some(item) => {
                bytes += item.bytes().len();
                into.push(item);
            }
            None => break,
        }
    }
}

/// Empties a written `batch`, keeping its whole segments for reuse; returns the budget
/// it held (to release with [`Connection::written`] once the lock is dropped).
fn release_locked(q: &mut ControlQueue, batch: &mut Vec<Queued>) -> usize {
    let mut cost = 0;
    for item in batch.drain(..) {
        cost += item.cost();
        if let Queued::Packed { mut buf, .. } = item {
            if buf.capacity() == SEGMENT && !q.closed {
                buf.clear();
                q.spare.push(buf);
                q.spare_bytes += SEGMENT;
            }
        }
    }
    cost
}

/// After a direct write of `written` bytes of `batch`: releases the frames written
/// whole, and puts the rest (the first one advanced past its written part) back at the
/// front of the queue, in order; `batch` is left empty. Returns the budget released and
/// whether anything was put back.
fn put_back(q: &mut ControlQueue, batch: &mut Vec<Queued>, mut written: usize) -> (usize, bool) {
    let whole = batch
        .iter()
        .position(|item| {
            let len = item.bytes().len();
            if written >= len {
                written -= len;
                false
            } else {
                true
            }
        })
        .unwrap_or(batch.len());
    let mut rest = batch.split_off(whole);
    let cost = release_locked(q, batch);
    let blocked = !rest.is_empty();
    if let Some(first) = rest.first_mut() {
        match first {
            Queued::Packed { buf, .. } => bytes::Buf::advance(buf, written),
            Queued::Frame { bytes, .. } => bytes::Buf::advance(bytes, written),
        }
    }
    for item in rest.into_iter().rev() {
        q.items.push_front(item);
    }
    (cost, blocked)
}

/// Writes the frames of `batch` to `sock` with non-blocking vectored writes until it
/// would block; returns the bytes written.
fn write_now(sock: &OwnedWriteHalf, batch: &[Queued]) -> std::io::Result<usize> {
    let mut slices = [IoSlice::new(&[]); TAKE_ITEMS];
    let n = batch.len().min(TAKE_ITEMS);
    for (slot, item) in slices.iter_mut().zip(batch) {
        *slot = IoSlice::new(item.bytes());
    }
    let mut bufs = &mut slices[..n];
    let mut written = 0;
    while !bufs.is_empty() {
        match sock.try_write_vectored(bufs) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(k) => {
                written += k;
                IoSlice::advance_slices(&mut bufs, k);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Seals the frames of `batch` into `buf` (cleared first) with `sealer` and writes
/// them to `sock` without blocking; gives back the sealer and the buffer with the bytes
/// written (fewer than its length if the socket would have blocked).
fn seal_and_write(
    sock: &OwnedWriteHalf,
    batch: &[Queued],
    sealer: Option<Sealer>,
    mut buf: Vec<u8>,
) -> (Option<Sealer>, Vec<u8>, std::io::Result<usize>) {
    let Some(mut sealer) = sealer else {
        return (
            None,
            buf,
            Err(std::io::Error::other("the sealer is missing")),
        );
    };
    buf.clear();
    let mut parts = [&[][..]; TAKE_ITEMS];
    let n = batch.len().min(TAKE_ITEMS);
    for (slot, item) in parts.iter_mut().zip(batch) {
        *slot = item.bytes();
    }
    if let Err(e) = sealer.seal_parts(&parts[..n], &mut buf) {
        return (Some(sealer), buf, Err(std::io::Error::other(e)));
    }
    let mut written = 0;
    while written < buf.len() {
        match sock.try_write(&buf[written..]) {
            Ok(0) => return (Some(sealer), buf, Err(std::io::ErrorKind::WriteZero.into())),
            Ok(k) => written += k,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return (Some(sealer), buf, Err(e)),
        }
    }
    (Some(sealer), buf, Ok(written))
}

/// Ends a batch begun by [`Connection::begin_batch`] when dropped.
pub(crate) struct BatchGuard<'a> {
    conn: &'a Connection,
    on: bool,
}

impl Drop for BatchGuard<'_> {
    fn drop(&mut self) {
        if self.on {
            self.conn.end_batch();
        }
    }
}

/// Opens an outbound connection (TCP, TLS, handshake) and runs it. Messages queued
/// meanwhile wait in the queues; if opening fails they all fail with the reason.
pub(crate) async fn run_outbound(env: RpcEnv, conn: Arc<Connection>, mut q: Queues) {
    let target = conn.peer().clone();
    let span = tracing::debug_span!("conn", peer = %target, dir = "out");
    let inner = env.inner.clone();
    let timeout = inner.conf.connect_timeout;
    let open = async {
        let tcp = TcpStream::connect(target.host_port()).await?;
        tcp.set_nodelay(true)?;
        Ok::<_, std::io::Error>(tcp)
    };
    let opts = ClientOptions {
        secret: inner.conf.secret.as_ref(),
        listen: inner.address.clone(),
        seal: inner.conf.encryption && inner.tls.is_none(),
        version: handshake::PROTOCOL_VERSION,
    };
    let key_id = inner.key_id.as_deref();
    // Shutting down, a connection still opening goes on while it has frames to write
    // and the drain time lasts.
    let abandon = async {
        env.inner.token.cancelled().await;
        if conn.queued_bytes() > 0 {
            env.drain_over().await;
        }
    };
    let opened = tokio::select! {
        _ = conn.closed.cancelled() => Err(ConnectError::ShuttingDown),
        _ = abandon => Err(ConnectError::ShuttingDown),
        r = tokio::time::timeout(timeout.duration, async {
            let mut tcp = open.await.map_err(|source| ConnectError::Connect { target: target.clone(), source })?;
            let handshake_failed = |source| ConnectError::Handshake { target: target.clone(), source };
            match &inner.tls {
                None => {
                    let est = handshake::client_keyed(&mut tcp, opts, key_id).await.map_err(handshake_failed)?;
                    Ok((Stream::Plain(tcp), est))
                }
                Some(tls) => {
                    let mut s = tls.connect(&target.host, tcp).await.map_err(|source| ConnectError::Tls { target: target.clone(), source })?;
                    let mut est = handshake::client_keyed(&mut s, opts, key_id).await.map_err(handshake_failed)?;
                    est.keys = None; // TLS protects the records already
                    Ok((Stream::TlsClient(Box::new(s)), est))
                }
            }
        }) => match r {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout { target: target.clone(), after: timeout.duration, setting: timeout.setting }),
        },
    };
    match opened {
        Err(e) => {
            let reason = e.to_string();
            span.in_scope(|| tracing::warn!("{reason}"));
            conn.closed.cancel();
            env.forget_connection(&conn);
            conn.fail_queued(&mut q, &reason);
            // Streams opened on a connection that never came up fail with it.
            conn.streams.fail_all(&target, &reason);
            env.post_event(Event::NetworkError(target, reason));
        }
        Ok((stream, est)) => {
            span.in_scope(|| tracing::debug!(sealed = est.keys.is_some(), "connected"));
            env.post_event(Event::Connected(target));
            run(env, conn, stream, est.keys, q).instrument(span).await
        }
    }
}

/// Accepts an inbound connection: TLS, handshake (with its deadline), then runs it.
/// A peer that fails is logged by address with the reason (rate-limited), and nothing
/// else changes.
pub(crate) async fn run_inbound(
    env: RpcEnv,
    tcp: TcpStream,
    socket: SocketAddr,
    slot: crate::env::HandshakeSlot,
) {
    let inner = env.inner.clone();
    let hs = inner.conf.handshake_timeout;
    let secret = inner.conf.secret.as_ref();
    let auth = ServerAuth {
        secret,
        keyring: inner.keyring.as_ref(),
    };
    let seal = inner.conf.encryption && inner.tls.is_none();
    let evicted = slot.evicted.clone();
    let handshake = tokio::time::timeout(hs.duration, async {
        // A source that recently failed to authenticate waits before it may try again.
        let delay = env.auth_delay(socket.ip());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match &inner.tls {
            None => {
                let mut tcp = tcp;
                let est = handshake::server_keyed(&mut tcp, auth, seal).await?;
                Ok::<_, handshake::HandshakeError>((Stream::Plain(tcp), est))
            }
            Some(tls) => {
                let mut s = tls.accept(tcp).await.map_err(|e| {
                    handshake::HandshakeError::Malformed(format!("TLS failed: {e}"))
                })?;
                let mut est = handshake::server_keyed(&mut s, auth, seal).await?;
                est.keys = None;
                Ok((Stream::TlsServer(Box::new(s)), est))
            }
        }
    });
    let accepted = tokio::select! {
        r = handshake => r,
        // Nothing is queued on a connection still in its handshake.
        _ = env.inner.token.cancelled() => return,
        _ = evicted.cancelled() => {
            env.refusals().warn(socket.ip(), || {
                format!(
                    "dropped the pending handshake of {socket}: too many connections are mid-handshake (rpc.max_pending_handshakes) and its address holds the most"
                )
            });
            return;
        }
    };
    drop(slot);
    let (stream, est) = match accepted {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            if matches!(
                e,
                handshake::HandshakeError::WrongSecret
                    | handshake::HandshakeError::PeerHasNoSecret
                    | handshake::HandshakeError::UnknownKey(_)
                    | handshake::HandshakeError::KeyRequired
            ) {
                env.auth_failed(socket.ip());
            }
            env.refusals().warn(socket.ip(), || {
                format!("refused connection from {socket}: {e}")
            });
            return;
        }
        Err(_) => {
            env.refusals().warn(socket.ip(), || {
                format!(
                    "refused connection from {socket}: handshake not finished within {:?} ({})",
                    hs.duration, hs.setting
                )
            });
            return;
        }
    };
    if secret.is_some() || est.key_id.is_some() {
        env.auth_succeeded(socket.ip());
    }
    // A declared listening address must parse back as one; otherwise the peer is known
    // by its socket address only.
    let listen = est
        .listen
        .filter(|a| a.to_string().parse::<RpcAddress>().as_ref() == Ok(a));
    let peer = listen
        .clone()
        .unwrap_or_else(|| RpcAddress::from_socket(socket));
    let span = tracing::debug_span!("conn", peer = %peer, dir = "in");
    let (conn, q) = env.adopt_inbound(peer.clone(), listen.is_some(), est.key_id.map(Arc::from));
    span.in_scope(|| tracing::debug!(socket = %socket, sealed = est.keys.is_some(), key_id = conn.key_id().unwrap_or(""), "accepted"));
    env.post_event(Event::Connected(peer));
    run(env, conn, stream, est.keys, q).instrument(span).await
}

pub(crate) enum Stream {
    Plain(TcpStream),
    TlsClient(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    TlsServer(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

async fn run(
    env: RpcEnv,
    conn: Arc<Connection>,
    stream: Stream,
    keys: Option<SessionKeys>,
    q: Queues,
) {
    let (sealer, opener) = match keys {
        Some(k) => {
            let (s, o) = k.split();
            (Some(s), Some(o))
        }
        None => (None, None),
    };
    match stream {
        Stream::Plain(tcp) => {
            // One socket shared by the reader, the writer task and direct writers.
            // The write half is shared by the writer task and direct writers.
            let (r, w) = tcp.into_split();
            let w = Arc::new(w);
            let sealed = sealer.is_some();
            conn.install(Some(w.clone()), sealer);
            run_halves(env, conn, Half(r), SharedTcp(w), sealed, opener, q).await
        }
        Stream::TlsClient(s) => {
            let sealed = sealer.is_some();
            conn.install(None, sealer);
            let (r, w) = tokio::io::split(*s);
            run_halves(env, conn, Half(r), w, sealed, opener, q).await
        }
        Stream::TlsServer(s) => {
            let sealed = sealer.is_some();
            conn.install(None, sealer);
            let (r, w) = tokio::io::split(*s);
            run_halves(env, conn, Half(r), w, sealed, opener, q).await
        }
    }
}

async fn run_halves<R, W>(
    env: RpcEnv,
    conn: Arc<Connection>,
    r: R,
    w: W,
    sealed: bool,
    opener: Option<Opener>,
    q: Queues,
) where
    R: ReadSide + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let writer =
        tokio::spawn(write_loop(env.clone(), conn.clone(), w, sealed, q).in_current_span());
    let reason = read_loop(&env, &conn, r, opener).await;
    conn.closed.cancel();
    // The writer fails what it never sent as "not delivered" before we fail the rest
    // as "connection lost".
    let _ = writer.await;
    env.forget_connection(&conn);
    conn.fail_pending(&reason);
    conn.streams.fail_all(conn.peer(), &reason);
    tracing::debug!("connection closed: {reason}");
    env.post_event(Event::Disconnected(conn.peer().clone()));
}

/// Most room a read buffer is given beyond what it holds: it grows by at most what it
/// holds already or the largest frame that arrived lately (so only arrived bytes make it
/// grow), and never by more than this per step.
const MAX_READ: usize = 512 * 1024;
/// Initial read buffer per connection; kept small because an idle master holds one
/// per worker (10,000 × 64 KiB would be 640 MiB once the pages are touched).
const READ_BUF: usize = 4 * 1024;
/// Most plaintext sealed per write, so the sealed copy stays small; it holds a whole
/// stream chunk frame (256 KiB and its header) so a chunk costs one write.
const SEAL_PIECE: usize = 512 * 1024;

/// Writes plaintext or sealed records.
struct Writer<W> {
    w: W,
    /// Whether to seal (with the connection's sealer, see [`Connection::take_sealer`]).
    seal: bool,
    sealed: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// Writes the concatenation of `parts`: as they are, in vectored writes, or sealed
    /// in records, at most [`SEAL_PIECE`] bytes of plaintext per write.
    async fn write(&mut self, conn: &Connection, parts: &[&[u8]]) -> std::io::Result<()> {
        if !self.seal {
            return tokio::select! {
                r = write_all_vectored(&mut self.w, parts) => r,
                _ = conn.closed.cancelled() => Err(closing()),
            };
        }
        let mut group: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        let mut size = 0;
        for &part in parts {
            let mut p = part;
            while !p.is_empty() {
                let take = p.len().min(SEAL_PIECE - size);
                group.push(&p[..take]);
                size += take;
                p = &p[take..];
                if size == SEAL_PIECE {
                    self.write_sealed(conn, &group).await?;
                    group.clear();
                    size = 0;
                }
            }
        }
        if size > 0 {
            self.write_sealed(conn, &group).await?;
        }
        Ok(())
    }

    async fn write_sealed(&mut self, conn: &Connection, parts: &[&[u8]]) -> std::io::Result<()> {
        self.sealed.clear();
        let mut s = conn
            .take_sealer()
            .ok_or_else(|| std::io::Error::other("the sealer is missing"))?;
        let r = s.seal_parts(parts, &mut self.sealed);
        conn.put_sealer(s);
        r.map_err(std::io::Error::other)?;
        tokio::select! {
            r = self.w.write_all(&self.sealed) => r,
            _ = conn.closed.cancelled() => Err(closing()),
        }
    }
}

fn closing() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "connection closing")
}

/// Writes all of `parts` with as few `writev` calls as the socket allows.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W,
    parts: &[&[u8]],
) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut bufs = &mut slices[..];
    while !bufs.is_empty() {
        let n = w.write_vectored(bufs).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

async fn write_loop<W: AsyncWrite + Unpin>(
    env: RpcEnv,
    conn: Arc<Connection>,
    w: W,
    seal: bool,
    mut q: Queues,
) {
    let mut batch: Vec<Queued> = Vec::new();
    let mut out = Writer {
        w,
        seal,
        sealed: Vec::new(),
    };
    // Once the env shuts down, the writer drains: it writes what is queued and then
    // ends (closing the connection), or ends when the drain time is over. Shutdown
    // wakes it through `work` ([`Connection::wake_writer`]) after cancelling the token,
    // so an idle writer waits on nothing else (no registration with the env-wide token
    // each time it goes idle).
    let shutting = env.inner.token.clone();
    let body = async {
        loop {
            match conn.take(&mut batch) {
                Took::Leftover(left) => write_leftover(&conn, &mut out, left).await?,
                Took::Busy => {
                    // A caller is writing directly; it wakes us when it is done.
                    tokio::select! {
                        _ = conn.work.notified() => {}
                        _ = conn.closed.cancelled() => return Ok(()),
                    }
                    continue;
                }
                Took::Empty if shutting.is_cancelled() => {
                    match q.bulk.try_recv() {
                        Ok(c) => write_bulk(&conn, &mut out, c).await?,
                        Err(_) => return Ok(()),
                    }
                    continue;
                }
                Took::Empty => {
                    let idle = conn
                        .has_spare()
                        .then(|| tokio::time::Instant::now() + SPARE_IDLE);
                    // Control frames first; a bulk chunk only when none is waiting.
                    tokio::select! {
                        biased;
                        _ = conn.work.notified() => {}
                        _ = sleep_until(idle) => conn.drop_spare(),
                        c = q.bulk.recv() => match c {
                            Some(c) => write_bulk(&conn, &mut out, c).await?,
                            None => return Ok(()),
                        },
                        _ = conn.closed.cancelled() => return Ok(()),
                    }
                }
                Took::Batch => {
                    {
                        let parts: Vec<&[u8]> = batch.iter().map(Queued::bytes).collect();
                        out.write(&conn, &parts).await?;
                    }
                    conn.release(&mut batch);
                    // At most one chunk between batches of control frames.
                    if let Ok(c) = q.bulk.try_recv() {
                        write_bulk(&conn, &mut out, c).await?;
                    }
                }
            }
            tokio::select! {
                r = out.w.flush() => r?,
                _ = conn.closed.cancelled() => return Ok(()),
            }
        }
    };
    let result: std::io::Result<()> = tokio::select! {
        r = body => r,
        _ = env.drain_over() => {
            if conn.queued_bytes() > 0 {
                tracing::debug!(
                    "shutdown: {} queued bytes not written within {:?} ({})",
                    conn.queued_bytes(),
                    env.inner.conf.shutdown_drain.duration,
                    env.inner.conf.shutdown_drain.setting
                );
            }
            Ok(())
        }
    };
    // Frames taken but not written count as written (their asks fail as lost).
    conn.release(&mut batch);
    let reason = match &result {
        Ok(()) => "connection closed before the message was sent".to_string(),
        Err(e) => {
            tracing::debug!("write failed: {e}");
            format!("writing to {} failed: {e}", conn.peer())
        }
    };
    conn.closed.cancel();
    conn.fail_queued(&mut q, &reason);
    let _ = tokio::time::timeout(std::time::Duration::from_millis(100), out.w.shutdown()).await;
}

/// Writes one bulk chunk, waiting for a direct writer to finish first.
async fn write_bulk<W: AsyncWrite + Unpin>(
    conn: &Connection,
    out: &mut Writer<W>,
    c: BulkFrame,
) -> std::io::Result<()> {
    loop {
        match conn.acquire() {
            Took::Batch => break,
            Took::Leftover(left) => write_leftover(conn, out, left).await?,
            Took::Busy | Took::Empty => tokio::select! {
                _ = conn.work.notified() => {}
                _ = conn.closed.cancelled() => return Err(closing()),
            },
        }
    }
    let r = out.write(conn, &[&c.head, &c.body]).await;
    conn.unacquire();
    r
}

/// Writes sealed bytes a direct write left over (holding `writing`), then gives
/// `writing` back.
async fn write_leftover<W: AsyncWrite + Unpin>(
    conn: &Connection,
    out: &mut Writer<W>,
    left: Vec<u8>,
) -> std::io::Result<()> {
    let r = tokio::select! {
        r = out.w.write_all(&left) => r,
        _ = conn.closed.cancelled() => Err(closing()),
    };
    conn.left_written(left);
    r
}

/// Bytes this connection holds in partially received frames, counted against the
/// env-wide `rpc.max_partial_frame_bytes`; released when dropped.
struct Held<'a> {
    env: &'a RpcEnv,
    bytes: usize,
}

impl Held<'_> {
    /// Sets the count to `now`; false if the env-wide cap would be passed.
    fn set(&mut self, now: usize) -> bool {
        let total = &self.env.inner.partial_bytes;
        if now > self.bytes {
            let add = now - self.bytes;
            let before = total.fetch_add(add, Ordering::AcqRel);
            self.bytes = now;
            before + add <= self.env.inner.conf.max_partial_bytes
        } else {
            total.fetch_sub(self.bytes - now, Ordering::AcqRel);
            self.bytes = now;
            true
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.env
            .inner
            .partial_bytes
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Where the reader reads from.
trait ReadSide: Send {
    /// Reads what has arrived into the spare capacity of `buf`; 0 at the end.
    fn read_into<'a>(
        &'a mut self,
        buf: &'a mut BytesMut,
    ) -> impl std::future::Future<Output = std::io::Result<usize>> + Send + 'a;
}

/// The read half of a stream (TLS).
struct Half<R>(R);

impl<R: AsyncRead + Unpin + Send> ReadSide for Half<R> {
    fn read_into<'a>(
        &'a mut self,
        buf: &'a mut BytesMut,
    ) -> impl std::future::Future<Output = std::io::Result<usize>> + Send + 'a {
        self.0.read_buf(buf)
    }
}

/// The write half of a plain TCP socket, shared by the writer task (through this
/// `AsyncWrite`: write readiness and non-blocking writes on `&OwnedWriteHalf`) and
/// direct writers ([`Connection::end_batch`]). The reader keeps its own read half: its
/// `poll_read` measured faster on round trips than readiness and `try_read_buf`.
struct SharedTcp(Arc<OwnedWriteHalf>);

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        loop {
            std::task::ready!(AsRef::<TcpStream>::as_ref(&*self.0).poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                r => return std::task::Poll::Ready(r),
            }
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        loop {
            std::task::ready!(AsRef::<TcpStream>::as_ref(&*self.0).poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                r => return std::task::Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    /// Shuts the sending direction down (a FIN after what was written).
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor belongs to the `TcpStream` this holds, open while it lives.
        let r = unsafe {
            libc::shutdown(
                AsRef::<TcpStream>::as_ref(&*self.0).as_raw_fd(),
                libc::SHUT_WR,
            )
        };
        let result = if r == 0 {
            Ok(())
        } else {
            match std::io::Error::last_os_error() {
                e if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(()),
                e => Err(e),
            }
        };
        std::task::Poll::Ready(result)
    }
}

/// Reads frames until the connection ends; returns why it ended.
async fn read_loop<R: ReadSide>(
    env: &RpcEnv,
    conn: &Arc<Connection>,
    mut r: R,
    mut opener: Option<Opener>,
) -> String {
    let mut codec = FrameCodec::new(conn.max_frame);
    let mut raw = BytesMut::with_capacity(READ_BUF);
    let mut plain = BytesMut::new();
    let mut held = Held { env, bytes: 0 };
    let ft = env.inner.conf.frame_timeout;
    let mut deadline: Option<tokio::time::Instant> = None;
    let close = |reason: String| {
        tracing::warn!(peer = %conn.peer(), "closing connection with {}: {reason}", conn.peer());
        reason
    };
    // The largest frame that arrived lately (decaying): having received that much, the
    // connection may have that much room for the next read up front.
    let mut recent = 0usize;
    // Asks answered by the frames of one read, completed together.
    let mut answered: Vec<(u64, Outcome)> = Vec::new();
    let mut inboxes = None;
    loop {
        // Room for reads grows only with arrived bytes: at most what is held, or the
        // largest frame that arrived lately, and a little more.
        let allowance = raw.len().max(recent).min(MAX_READ) + READ_BUF;
        match &opener {
            None => {
                let spare = raw.capacity() - raw.len();
                match front_need(&raw) {
                    // The rest of the frame in progress (as far as the allowance goes)
                    // and a little of the next: the frame is split off whole, and the
                    // next one starts in a buffer of its own without the frame's bytes
                    // being copied.
                    Some(n) if n > spare => raw.reserve(n.min(allowance) + READ_BUF),
                    _ if spare < 512 => raw.reserve(allowance),
                    _ => {}
                }
            }
            Some(_) => {
                // Opened records go onto the frame in progress without regrowing it
                // piecemeal; a record may carry the start of the next frame too.
                if let Some(n) = front_need(&plain) {
                    if n > plain.capacity() - plain.len() {
                        let held = plain.len().max(recent).min(MAX_READ) + READ_BUF;
                        plain.reserve(n.min(held) + crate::seal::MAX_RECORD);
                    }
                }
                if raw.capacity() - raw.len() < 512 {
                    raw.reserve(allowance);
                }
            }
        }
        let read = tokio::select! {
            biased;
            _ = conn.closed.cancelled() => return "connection closed by this side".into(),
            n = r.read_into(&mut raw) => n,
            _ = sleep_until(deadline) => {
                return close(format!(
                    "a frame started arriving but did not finish within {:?} ({}); {} bytes of it received",
                    ft.duration, ft.setting, held.bytes
                ));
            }
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => return close(format!("i/o error: {e}")),
        };
        if n == 0 {
            return if held.bytes == 0 {
                format!("{} closed the connection", conn.peer())
            } else {
                close(format!(
                    "connection closed in the middle of a frame ({} bytes of it received)",
                    held.bytes
                ))
            };
        }
        let frames = match &mut opener {
            None => &mut raw,
            Some(o) => {
                if let Err(e) = o.open(&mut raw, &mut plain) {
                    return close(e.to_string());
                }
                &mut plain
            }
        };
        let mut progressed = false;
        // What routing this read's frames queues (replies of inline handlers, say) is
        // written by this task when it is done, not handed to the writer task.
        let batch = conn.begin_batch();
        loop {
            match codec.decode(frames) {
                Ok(Some(frame)) => {
                    progressed = true;
                    let len = frame.len() + frame::LEN_BYTES;
                    recent = len.max(recent - recent / 16);
                    if let Err(e) = route(env, conn, &frame, &mut answered, &mut inboxes) {
                        conn.complete_all(&mut answered);
                        return close(e.to_string());
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    conn.complete_all(&mut answered);
                    return close(e.to_string());
                }
            }
        }
        drop(batch);
        conn.complete_all(&mut answered);
        let partial = frames.len() + if opener.is_some() { raw.len() } else { 0 };
        if !held.set(partial) {
            return close(format!(
                "partially received frames across all connections exceed rpc.max_partial_frame_bytes ({} bytes)",
                env.inner.conf.max_partial_bytes
            ));
        }
        deadline = match (partial, deadline) {
            (0, _) => None,
            (_, Some(d)) if !progressed => Some(d),
            _ => Some(tokio::time::Instant::now() + ft.duration),
        };
    }
}

/// Bytes still missing from the frame at the front of `buf`, once its length is known.
fn front_need(buf: &BytesMut) -> Option<usize> {
    let len = u32::from_be_bytes(buf.get(..frame::LEN_BYTES)?.try_into().ok()?) as usize;
    (frame::LEN_BYTES + len).checked_sub(buf.len())
}

/// The sweeper of a connection's ask deadlines (see [`PendingTable`]): idle (no timer)
/// while nothing is pending, woken when an ask with an earlier deadline registers;
/// ends with the connection, whose end fails whatever is still pending.
async fn sweep_loop(conn: Arc<Connection>) {
    let mut at = None;
    loop {
        tokio::select! {
            biased;
            _ = conn.closed.cancelled() => return,
            _ = conn.sweep.notified() => at = conn.pending.lock().sweep_at,
            _ = sleep_until(at) => at = conn.sweep_expired(),
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Answers request `id` for endpoint `to` with a failure if its inbox did not take it.
fn request_posted(env: &RpcEnv, conn: &Connection, id: u64, to: &str, posted: Posted) {
    match posted {
        Posted::Queued => {}
        Posted::Stopped => conn.send_failure(
            id,
            FailureKind::NotDelivered,
            &format!("endpoint {} has stopped", quote(to)),
        ),
        Posted::Full => conn.send_failure(
            id,
            FailureKind::Busy,
            &format!(
                "endpoint {} at {} is busy: its inbox is full (rpc.endpoint.max_queued_bytes); retry later",
                quote(to),
                env.describe()
            ),
        ),
    }
}

/// Routes one frame. An error means the peer broke the protocol and the connection
/// must close; a message for an unknown endpoint is refused but keeps the connection.
fn route(
    env: &RpcEnv,
    conn: &Arc<Connection>,
    frame: &Bytes,
    answered: &mut Vec<(u64, Outcome)>,
    inboxes: &mut Option<InboxCache>,
) -> Result<(), ProtocolError> {
    // Requests to the endpoint asked last and replies: read without serde, the name
    // compared with the cached one's bytes. Anything else takes the general path.
    match frame::peek(frame) {
        Some(frame::Peeked::Response { id, ty, body_at }) => {
            answered.push((
                id,
                Outcome::Reply {
                    ty,
                    body: frame.slice(body_at..),
                },
            ));
            return Ok(());
        }
        Some(frame::Peeked::Request {
            id,
            to,
            protocol,
            reply,
            body_at,
        }) => {
            if let Some(c) = env.inbox_if_cached(inboxes, to) {
                if c.inbox.protocol_id() == protocol {
                    let body = frame.slice(body_at..);
                    let posted = c
                        .inbox
                        .post_request_from(&mut c.slot, body, id, reply, conn);
                    request_posted(env, conn, id, &c.name, posted);
                    return Ok(());
                }
            }
        }
        None => {}
    }
    let (header, body) = frame::split_frame(frame)?;
    let limit = env.dropped_log();
    match header {
        Header::OneWay { to, protocol } => match env.inbox_cached(inboxes, to) {
            Some(inbox) if inbox.protocol_id() == protocol => {
                match inbox.post_one_way(body, conn.clone()) {
                    Posted::Queued => {}
                    Posted::Stopped => limit.warn((conn.peer(), "stopped"), || {
                        format!("message from {} for stopped endpoint {} dropped", conn.peer(), quote(to))
                    }),
                    Posted::Full => limit.warn((conn.peer(), "full"), || {
                        format!(
                            "message from {} for endpoint {} dropped: its inbox is full (rpc.endpoint.max_queued_bytes)",
                            conn.peer(),
                            quote(to)
                        )
                    }),
                }
            }
            Some(inbox) => limit.warn((conn.peer(), "protocol"), || {
                format!(
                    "message from {} for endpoint {} is of an unknown protocol (id {protocol:#010x}; it speaks {}); dropped",
                    conn.peer(),
                    quote(to),
                    inbox.protocol_name()
                )
            }),
            None => limit.warn((conn.peer(), "unknown"), || {
                format!("message from {} for unknown endpoint {}; dropped", conn.peer(), quote(to))
            }),
        },
        Header::Request {
            id,
            to,
            protocol,
            reply,
        } => match env.inbox_cached(inboxes, to) {
            Some(inbox) if inbox.protocol_id() == protocol => {
                let posted = inbox.post_request(body, id, reply, conn.clone());
                request_posted(env, conn, id, to, posted)
            }
            Some(inbox) => {
                let why = format!(
                    "endpoint {} speaks {}; this request is of another protocol (id {protocol:#010x})",
                    quote(to),
                    inbox.protocol_name()
                );
                limit.warn((conn.peer(), "request protocol"), || {
                    format!("request from {} refused: {why}", conn.peer())
                });
                conn.send_failure(id, FailureKind::Handler, &why);
            }
            None => {
                let why = format!("no endpoint named {} at {}", quote(to), env.describe());
                limit.warn((conn.peer(), "request unknown"), || {
                    format!("request from {} refused: {why}", conn.peer())
                });
                conn.send_failure(id, FailureKind::NotDelivered, &why);
            }
        },
        Header::Response { id, ty } => answered.push((id, Outcome::Reply { ty, body })),
        Header::Failure { id, kind, message } => {
            answered.push((id, Outcome::Failed(kind, message.to_string())))
        }
        Header::StreamOpen {
            sid,
            to,
            pull,
            window,
        } => crate::stream::on_open(env, conn, sid, to, pull, window, body)?,
        Header::StreamData { sid, opener } => conn.streams.on_data(sid, !opener, body)?,
        Header::StreamCredit {
            sid,
            opener,
            chunks,
        } => conn.streams.on_credit(sid, !opener, chunks),
        Header::StreamEnd { sid, opener, error } => {
            conn.streams.on_end(sid, !opener, error, conn.peer())
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(bytes: &[u8], cost: usize) -> Queued {
        let mut buf = BytesMut::with_capacity(cost);
        buf.extend_from_slice(bytes);
        Queued::Packed {
            buf,
            asks: vec![],
            frames: 1,
            cost,
        }
    }

    fn frame(bytes: &[u8]) -> Queued {
        Queued::Frame {
            bytes: Bytes::copy_from_slice(bytes),
            ask: None,
            cost: bytes.len() + PER_FRAME,
        }
    }

    fn queued(q: &ControlQueue) -> Vec<u8> {
        q.items.iter().flat_map(|i| i.bytes().to_vec()).collect()
    }

    /// After a direct write of any number of bytes, the frames written whole are
    /// released (their cost returned) and the unwritten bytes are back at the front of
    /// the queue, in order, before what was queued meanwhile.
    #[test]
    fn put_back_requeues_exactly_the_unwritten_bytes_in_order() {
        let parts: [&[u8]; 3] = [b"aaaa", b"bbbbbbbb", b"cc"];
        let all: Vec<u8> = parts.concat();
        for written in 0..=all.len() {
            let mut q = ControlQueue::default();
            q.items.push_back(frame(b"later"));
            let mut batch = vec![
                packed(parts[0], 100),
                frame(parts[1]),
                packed(parts[2], 200),
            ];
            let (cost, blocked) = put_back(&mut q, &mut batch, written);
            assert!(batch.is_empty());
            let mut want = all[written..].to_vec();
            want.extend_from_slice(b"later");
            assert_eq!(queued(&q), want, "written {written}");
            assert_eq!(blocked, written < all.len(), "written {written}");
            let released = match written {
                w if w < 4 => 0,
                w if w < 12 => 100,
                w if w < 14 => 100 + 8 + PER_FRAME,
                _ => 100 + 8 + PER_FRAME + 200,
            };
            assert_eq!(cost, released, "written {written}");
        }
    }
}
