//! [`Pipeline`]: many asks of one type to one endpoint, with a bounded window of
//! outstanding requests and the replies taken in order.
//!
//! A plain [`ask`](crate::EndpointRef::ask) costs a pending-table entry, a channel and
//! a wake-up of its own. A pipeline registers once with the connection; its requests
//! carry ids made of [`PIPE_BIT`], the pipeline's number and a sequence number, so
//! the connection's reader puts each reply straight into the pipeline's slot for it
//! (one lock per read for all the replies in it) and wakes the caller once. A batch
//! of requests is encoded into one buffer and copied into the connection's outbound
//! segment with one lock ([`Connection::enqueue_small`]).
//!
//! Bounds: at most `window` requests are outstanding (each holds one slot); the
//! bytes queued count against the connection's `rpc.connection.max_queued_bytes` as
//! any other frame, and a push waits for room in it (bounded by the requests'
//! deadline). Every request taken by a push gets exactly one result, in push order:
//! its reply, its failure, `Timeout` once its deadline has passed, `NotDelivered` if
//! it could not be queued, `ConnectionLost` if the connection closed after sending it.

use std::collections::VecDeque;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};

use bytes::Bytes;
use futures::FutureExt as _;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::conf::RpcTimeout;
use crate::connection::{Connection, Outcome, Refused, LARGE_FRAME};
use crate::endpoint::{Ask, Protocol};
use crate::error::AskError;
use crate::frame::{self, FailureKind};
use crate::reference::{decode_with, EndpointRef, Target};

/// Request ids with this bit set belong to a pipeline (ids of plain asks come from a
/// counter that never gets near it).
pub(crate) const PIPE_BIT: u64 = 1 << 63;

/// The most requests a pipeline may keep outstanding.
pub const MAX_PIPELINE_WINDOW: usize = 65_536;

/// Frames are copied into the connection's queue once this many bytes are encoded.
const FLUSH_AT: usize = 8 * 1024;

/// Pipeline numbers, process-wide (31 bits; they wrap after 2³¹ pipelines).
static NEXT_PIPE: AtomicU32 = AtomicU32::new(1);

/// The request id of sequence number `seq` of pipeline `no`.
pub(crate) fn pipe_id(no: u32, seq: u64) -> u64 {
    PIPE_BIT | (u64::from(no & 0x7fff_ffff) << 32) | (seq & 0xffff_ffff)
}

/// The pipeline number and the low 32 bits of the sequence number of a pipeline's
/// request id; `None` for the id of a plain ask.
pub(crate) fn split_pipe_id(id: u64) -> Option<(u32, u32)> {
    (id & PIPE_BIT != 0).then_some((((id >> 32) as u32) & 0x7fff_ffff, id as u32))
}

/// One outstanding request: the connection it went out on, its outcome once known.
struct Slot {
    conn: u64,
    outcome: Option<Outcome>,
}

struct PipeState {
    /// Sequence number of `slots[0]`.
    head: u64,
    slots: VecDeque<Slot>,
    waker: Option<Waker>,
}

/// The part of a pipeline its connection's reader fills in.
pub(crate) struct PipeShared {
    state: Mutex<PipeState>,
}

impl PipeShared {
    /// Stores the outcomes of one read's replies (`(low 32 bits of seq, outcome)`)
    /// that arrived over connection `conn`; a reply for a request that is no longer
    /// outstanding (timed out and taken) or that went out on another connection is
    /// dropped. Returns the waker to wake once the connection's locks are released.
    pub(crate) fn put_all(&self, conn: u64, batch: &mut Vec<(u32, Outcome)>) -> Option<Waker> {
        let mut st = self.state.lock();
        let head = st.head as u32;
        for (low, outcome) in batch.drain(..) {
            let off = low.wrapping_sub(head) as usize;
            match st.slots.get_mut(off) {
                Some(slot) if slot.conn == conn && slot.outcome.is_none() => {
                    slot.outcome = Some(outcome)
                }
                _ => tracing::debug!(
                    conn,
                    "reply for a pipelined ask no longer waiting (timed out?)"
                ),
            }
        }
        st.waker.take()
    }

    /// Fails every request that went out on connection `conn` and has no outcome yet
    /// (the connection closed): they were written, so their outcome is unknown.
    pub(crate) fn fail_sent_on(&self, conn: u64, reason: &str) {
        let waker = {
            let mut st = self.state.lock();
            for slot in st.slots.iter_mut() {
                if slot.conn == conn && slot.outcome.is_none() {
                    slot.outcome = Some(Outcome::Lost(reason.to_string()));
                }
            }
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

type LocalAsk<R> = Pin<Box<dyn Future<Output = Result<R, AskError>> + Send>>;

enum Mode<R> {
    /// Over a connection: slots filled by its reader.
    Remote(Remote),
    /// To an endpoint in this environment (or a ref that could not be bound): plain
    /// asks, awaited in order.
    Local(VecDeque<LocalAsk<R>>),
}

struct Remote {
    no: u32,
    shared: Arc<PipeShared>,
    /// The connection the pipeline is registered with.
    conn: Option<Arc<Connection>>,
    /// Sequence number of the next request.
    next_seq: u64,
    /// Deadline of every outstanding request, oldest first (`slots` in step).
    deadlines: VecDeque<Instant>,
    /// Frames encoded and not yet queued, and their request ids.
    buf: Vec<u8>,
    ids: Vec<u64>,
    /// Outcomes taken from the slots, decoded outside the lock.
    taken: Vec<Option<Outcome>>,
    /// The requests' header, encoded once.
    head: Option<frame::RequestHead>,
}

/// Many asks of type `Q` to one endpoint, at most `window` outstanding, replies taken
/// in the order the requests were pushed. Made by [`EndpointRef::pipeline`].
///
/// ```no_run
/// # use flint_rpc::{Ask, EndpointRef, Protocol};
/// # async fn demo<M: Protocol, Q: Ask + Into<M>>(r: EndpointRef<M>, mut more: impl Iterator<Item = Q> + Send) {
/// let mut p = r.pipeline::<Q>(64);
/// let mut replies = Vec::new();
/// p.push_batch(&mut more).await;          // up to 64 requests, in one write
/// while p.next_batch(&mut replies).await > 0 {
///     // `replies` holds every reply that has arrived, in order; refill the window.
///     p.push_batch(&mut more).await;
/// #   replies.clear();
/// }
/// # }
/// ```
pub struct Pipeline<M: Protocol, Q: Ask + Into<M>> {
    r: EndpointRef<M>,
    window: usize,
    timeout: RpcTimeout,
    mode: Mode<Q::Reply>,
    _q: PhantomData<fn(Q)>,
}

impl<M: Protocol> EndpointRef<M> {
    /// A pipeline of asks of type `Q` to this endpoint keeping at most `window`
    /// outstanding (clamped to 1..=[`MAX_PIPELINE_WINDOW`]), each with the deadline
    /// `rpc.ask_timeout` (see [`Pipeline::with_timeout`]).
    pub fn pipeline<Q: Ask + Into<M>>(&self, window: usize) -> Pipeline<M, Q> {
        let mode = match &self.inner.target {
            Target::Remote(..) | Target::Client(_) => Mode::Remote(Remote {
                no: NEXT_PIPE.fetch_add(1, Ordering::Relaxed) & 0x7fff_ffff,
                shared: Arc::new(PipeShared {
                    state: Mutex::new(PipeState {
                        head: 0,
                        slots: VecDeque::new(),
                        waker: None,
                    }),
                }),
                conn: None,
                next_seq: 0,
                deadlines: VecDeque::new(),
                buf: Vec::new(),
                ids: Vec::new(),
                taken: Vec::new(),
                head: None,
            }),
            Target::Local(_) | Target::Missing(_) => Mode::Local(VecDeque::new()),
        };
        Pipeline {
            r: self.clone(),
            window: window.clamp(1, MAX_PIPELINE_WINDOW),
            timeout: self.inner.env.inner.conf.ask_timeout,
            mode,
            _q: PhantomData,
        }
    }
}

impl<M: Protocol, Q: Ask + Into<M>> Pipeline<M, Q> {
    /// The same pipeline with each request's deadline `timeout` (counted from its
    /// push) instead of `rpc.ask_timeout`.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = RpcTimeout {
            duration: timeout,
            setting: "the timeout passed to Pipeline::with_timeout",
        };
        self
    }

    /// The most requests outstanding at once.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Requests pushed whose result has not been taken yet.
    pub fn outstanding(&self) -> usize {
        match &self.mode {
            Mode::Remote(rm) => rm.deadlines.len(),
            Mode::Local(asks) => asks.len(),
        }
    }

    /// How many more requests a push would take now.
    pub fn room(&self) -> usize {
        self.window - self.outstanding()
    }

    /// Pushes one request (waiting for room in the connection's queue, as
    /// [`push_batch`](Self::push_batch)); false if the window is full.
    pub async fn push(&mut self, q: Q) -> bool {
        self.push_batch(std::iter::once(q)).await == 1
    }

    /// Takes up to [`room`](Self::room) requests from `qs` (it is not advanced
    /// further: pass `&mut iter` to keep the rest) and queues them, encoded into as
    /// few outbound segments as they fit (one for a window of small requests).
    /// Returns how many were taken. Every request taken gets one result, in order,
    /// from [`next`](Self::next) / [`next_batch`](Self::next_batch), failures
    /// included (e.g. `NotDelivered` for a request too large to send).
    ///
    /// While the connection's outbound queue is at its byte budget
    /// (`rpc.connection.max_queued_bytes`) this waits for room, at most until the
    /// requests' deadline (then they fail as not delivered): it is for callers
    /// outside handlers, like [`EndpointRef::ask_waiting`].
    pub async fn push_batch<I>(&mut self, qs: I) -> usize
    where
        I: IntoIterator<Item = Q>,
        I::IntoIter: Send,
    {
        let room = self.room();
        let t = self.timeout;
        match &mut self.mode {
            Mode::Local(asks) => {
                let mut n = 0;
                for q in qs.into_iter().take(room) {
                    asks.push_back(Box::pin(self.r.ask_within(q, t)));
                    n += 1;
                }
                n
            }
            Mode::Remote(rm) => {
                let deadline = Instant::now() + t.duration;
                let r = &self.r;
                // The requests are written by this task once queued (when nobody else
                // is writing and the socket takes them), without waking the writer.
                let known = rm.conn.clone();
                let _batch = known.as_ref().map(|c| c.begin_batch());
                let mut n = 0;
                let max = r.inner.env.inner.conf.max_message_size;
                if rm.head.is_none() {
                    let expects = frame::type_id_of::<Q::Reply>();
                    rm.head = frame::RequestHead::new(r.name(), M::ID, expects).ok();
                }
                rm.buf.clear();
                rm.ids.clear();
                for q in qs.into_iter().take(room) {
                    n += 1;
                    let msg: M = q.into();
                    let id = pipe_id(rm.no, rm.next_seq + rm.ids.len() as u64);
                    let start = rm.buf.len();
                    let encoded = match &rm.head {
                        Some(head) => head.encode_into(id, &msg, &mut rm.buf),
                        None => Err(postcard::Error::SerializeBufferFull),
                    };
                    let failed = match encoded {
                        Ok(len) if len - frame::LEN_BYTES > max => {
                            rm.buf.truncate(start);
                            Some(format!(
                                "message of {} bytes exceeds rpc.message.max_size ({max} bytes)",
                                len - frame::LEN_BYTES
                            ))
                        }
                        Ok(_) => None,
                        Err(e) => Some(format!("cannot encode message: {e}")),
                    };
                    if let Some(reason) = failed {
                        // Queue what came before, then fail this one in its place.
                        rm.flush(r, start, deadline, t).await;
                        rm.fail_local(deadline, reason);
                        continue;
                    }
                    rm.ids.push(id);
                    if rm.buf.len() >= LARGE_FRAME {
                        // A large frame goes on its own, after the ones before it.
                        rm.flush(r, start, deadline, t).await;
                        rm.flush(r, rm.buf.len(), deadline, t).await;
                    } else if rm.buf.len() >= FLUSH_AT {
                        rm.flush(r, rm.buf.len(), deadline, t).await;
                    }
                }
                rm.flush(r, rm.buf.len(), deadline, t).await;
                // A large request leaves no large buffer behind.
                if rm.buf.capacity() > 4 * LARGE_FRAME {
                    rm.buf = Vec::new();
                }
                n
            }
        }
    }

    /// The result of the oldest request, waiting for it (at most until its deadline);
    /// `None` if nothing is outstanding.
    pub async fn next(&mut self) -> Option<Result<Q::Reply, AskError>> {
        let mut out = Vec::with_capacity(1);
        self.take(&mut out, 1).await;
        out.pop()
    }

    /// Waits for the result of the oldest request (at most until its deadline), then
    /// appends it and the results of the requests after it that are already there,
    /// in order, to `out`. Returns how many were appended: 0 only if nothing is
    /// outstanding.
    pub async fn next_batch(&mut self, out: &mut Vec<Result<Q::Reply, AskError>>) -> usize {
        self.take(out, usize::MAX).await
    }

    async fn take(&mut self, out: &mut Vec<Result<Q::Reply, AskError>>, limit: usize) -> usize {
        match &mut self.mode {
            Mode::Local(asks) => {
                let Some(first) = asks.pop_front() else {
                    return 0;
                };
                out.push(first.await);
                let mut n = 1;
                while n < limit {
                    let Some(f) = asks.front_mut() else { break };
                    match f.as_mut().now_or_never() {
                        Some(r) => {
                            out.push(r);
                            asks.pop_front();
                            n += 1;
                        }
                        None => break,
                    }
                }
                n
            }
            Mode::Remote(rm) => {
                let Some(&deadline) = rm.deadlines.front() else {
                    return 0;
                };
                let shared = rm.shared.clone();
                let head_ready = std::future::poll_fn(|cx| {
                    let mut st = shared.state.lock();
                    if st.slots.front().is_some_and(|s| s.outcome.is_some()) {
                        return Poll::Ready(());
                    }
                    match &st.waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => st.waker = Some(cx.waker().clone()),
                    }
                    Poll::Pending
                });
                let mut head_ready = std::pin::pin!(head_ready);
                // Ready already: no timer. Otherwise wait, at most until the deadline.
                let now = match futures::poll!(head_ready.as_mut()) {
                    Poll::Ready(()) => None,
                    Poll::Pending => match tokio::time::timeout_at(deadline, head_ready).await {
                        Ok(()) => None,
                        Err(_) => Some(Instant::now()),
                    },
                };
                // Take the outcomes there are (and the requests past their deadline).
                {
                    let mut st = rm.shared.state.lock();
                    st.waker = None;
                    while rm.taken.len() < limit {
                        let Some(slot) = st.slots.front_mut() else {
                            break;
                        };
                        let expired = rm.deadlines.get(rm.taken.len()).is_some_and(|d| {
                            slot.outcome.is_none() && now.is_some_and(|now| *d <= now)
                        });
                        if slot.outcome.is_none() && !expired {
                            break;
                        }
                        rm.taken.push(slot.outcome.take());
                        st.slots.pop_front();
                        st.head += 1;
                    }
                }
                let n = rm.taken.len();
                rm.deadlines.drain(..n);
                let env = &self.r.inner.env;
                let conn = rm.conn.as_ref();
                let t = self.timeout;
                for outcome in rm.taken.drain(..) {
                    out.push(match outcome {
                        None => Err(AskError::Timeout {
                            to: self.r.address().to_string(),
                            after: t.duration,
                            setting: t.setting,
                        }),
                        Some(o) => result_of::<Q::Reply, M>(&self.r, env, conn, o, t),
                    });
                }
                n
            }
        }
    }
}

/// The caller's result for the outcome of a request (pipelined or a single ask).
pub(crate) fn result_of<R: crate::Message, M: Protocol>(
    r: &EndpointRef<M>,
    env: &crate::RpcEnv,
    conn: Option<&Arc<Connection>>,
    outcome: Outcome,
    t: RpcTimeout,
) -> Result<R, AskError> {
    let to = || r.address().to_string();
    match outcome {
        Outcome::Reply { ty, .. } if ty != frame::type_id_of::<R>() => Err(AskError::Remote {
            to: to(),
            message: format!(
                "the reply is of another type than the expected {} (type id {ty:#010x}); is the peer built from different code?",
                std::any::type_name::<R>()
            ),
        }),
        Outcome::Reply { body, .. } => {
            decode_with::<R>(env, conn, &body).map_err(|e| AskError::Remote {
                to: to(),
                message: format!(
                    "reply cannot be decoded as {}: {e}",
                    std::any::type_name::<R>()
                ),
            })
        }
        Outcome::Failed(FailureKind::NotDelivered, reason) | Outcome::NotSent(reason) => {
            Err(AskError::NotDelivered { to: to(), reason })
        }
        Outcome::Failed(FailureKind::Handler, message) => {
            Err(AskError::Remote { to: to(), message })
        }
        Outcome::Failed(FailureKind::Busy, reason) => Err(AskError::Busy { to: to(), reason }),
        Outcome::Lost(reason) => Err(AskError::ConnectionLost { to: to(), reason }),
        Outcome::TimedOut => Err(AskError::Timeout {
            to: to(),
            after: t.duration,
            setting: t.setting,
        }),
    }
}

impl Remote {
    /// The connection to send on, registering the pipeline with it; a closed one is
    /// replaced (server-mode peers) once.
    fn connection<M: Protocol>(&mut self, r: &EndpointRef<M>) -> Result<Arc<Connection>, String> {
        if let Some(c) = &self.conn {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let stale = self.conn.take();
        if let Some(s) = &stale {
            s.unregister_pipe(self.no);
        }
        let c = match &r.inner.target {
            Target::Remote(addr, cache) => r
                .inner
                .env
                .conn_for(addr, cache, stale.as_ref())
                .map_err(|f| f.to_string())?,
            Target::Client(c) if !c.is_closed() => c.clone(),
            Target::Client(_) => return Err("the connection the client opened has closed".into()),
            Target::Local(_) | Target::Missing(_) => return Err("no connection".into()),
        };
        if !c.register_pipe(self.no, self.shared.clone()) {
            return Err("the connection closed".into());
        }
        self.conn = Some(c.clone());
        Ok(c)
    }

    /// Adds one request that failed before it could be queued: its result comes in
    /// its place.
    fn fail_local(&mut self, deadline: Instant, reason: String) {
        let mut st = self.shared.state.lock();
        st.slots.push_back(Slot {
            conn: 0,
            outcome: Some(Outcome::NotSent(reason)),
        });
        self.deadlines.push_back(deadline);
        self.next_seq += 1;
        debug_assert!(self.ids.is_empty());
    }

    /// Queues the frames in `buf[..upto]` (their ids are all of `ids` but the last
    /// if `upto` is short of the end), waiting for room in the connection's budget
    /// until `deadline`; requests that cannot be queued get their failure in their
    /// slot. The rest of `buf` moves to its front.
    async fn flush<M: Protocol>(
        &mut self,
        r: &EndpointRef<M>,
        upto: usize,
        deadline: Instant,
        t: RpcTimeout,
    ) {
        let frames = if upto == self.buf.len() {
            self.ids.len()
        } else {
            self.ids.len() - 1
        };
        if frames == 0 {
            return;
        }
        let mut failure = None;
        let mut conn = None;
        // A large frame alone takes the buffer along instead of being copied.
        let large = (upto >= LARGE_FRAME && frames == 1 && upto == self.buf.len())
            .then(|| Bytes::from(std::mem::take(&mut self.buf)));
        for _ in 0..2 {
            let c = match self.connection(r) {
                Ok(c) => c,
                Err(why) => {
                    failure = Some(why);
                    break;
                }
            };
            {
                let mut st = self.shared.state.lock();
                for _ in 0..frames {
                    st.slots.push_back(Slot {
                        conn: c.id,
                        outcome: None,
                    });
                }
            }
            let frame = match &large {
                Some(b) => Frames::Large(b.clone()),
                None => Frames::Small(&self.buf[..upto]),
            };
            match queue(&c, frame, &self.ids[..frames], deadline).await {
                Ok(()) => {
                    failure = None;
                    conn = Some(c);
                    break;
                }
                Err(e) => {
                    let mut st = self.shared.state.lock();
                    let keep = st.slots.len() - frames;
                    st.slots.truncate(keep);
                    failure = Some(match e {
                        Refused::Full => format!(
                            "the connection's outbound queue stayed at its byte budget (rpc.connection.max_queued_bytes) for the whole deadline of {:?}; this timeout is controlled by {}",
                            t.duration, t.setting
                        ),
                        Refused::Closed => "the connection closed before the message was queued".into(),
                    });
                    if e == Refused::Full {
                        break;
                    }
                }
            }
        }
        if conn.is_none() {
            let reason = failure.unwrap_or_else(|| "the connection keeps closing".into());
            let mut st = self.shared.state.lock();
            for _ in 0..frames {
                st.slots.push_back(Slot {
                    conn: 0,
                    outcome: Some(Outcome::NotSent(reason.clone())),
                });
            }
        }
        self.deadlines.extend(std::iter::repeat_n(deadline, frames));
        self.next_seq += frames as u64;
        // (Empty already if a large frame took the buffer along.)
        self.buf.drain(..upto.min(self.buf.len()));
        self.ids.drain(..frames);
    }
}

/// Frames to queue: small ones packed together (copied into a segment), or one large
/// frame in a buffer of its own.
enum Frames<'a> {
    Small(&'a [u8]),
    Large(Bytes),
}

/// Queues `frames` (whose request ids are `ids`) on `c`, waiting for room in its
/// budget until `deadline`.
async fn queue(
    c: &Connection,
    frames: Frames<'_>,
    ids: &[u64],
    deadline: Instant,
) -> Result<(), Refused> {
    loop {
        let room = c.room();
        let mut room = std::pin::pin!(room);
        room.as_mut().enable();
        let tried = match &frames {
            Frames::Small(bytes) if bytes.len() < LARGE_FRAME => {
                c.enqueue_small(bytes, ids.len(), ids)
            }
            Frames::Small(bytes) => c.enqueue_large(Bytes::copy_from_slice(bytes), ids[0]),
            Frames::Large(bytes) => c.enqueue_large(bytes.clone(), ids[0]),
        };
        match tried {
            Err(Refused::Full) => {}
            other => return other,
        }
        tokio::select! {
            _ = room => {}
            _ = tokio::time::sleep_until(deadline) => return Err(Refused::Full),
            _ = c.closed.cancelled() => return Err(Refused::Closed),
        }
    }
}

impl<M: Protocol, Q: Ask + Into<M>> Drop for Pipeline<M, Q> {
    fn drop(&mut self) {
        if let Mode::Remote(rm) = &self.mode {
            if let Some(c) = &rm.conn {
                c.unregister_pipe(rm.no);
            }
        }
    }
}
