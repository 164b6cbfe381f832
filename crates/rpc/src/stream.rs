//! Bulk streams: large payloads (binaries, task results, shuffle blocks) sent in
//! chunks under per-stream credit, beside the ordinary messages of a connection.
//!
//! A stream is opened towards a named [`StreamHandler`] of the peer, either to *pull*
//! (the opener consumes what the handler produces for its request) or to *push* (the
//! opener produces, the handler consumes). The consumer grants credit in chunks
//! (`rpc.stream.window`, each of `rpc.stream.chunk_size` bytes); the producer sends a
//! chunk only against credit, so a consumer that stops reading stalls its own stream
//! and nothing else, and neither side holds more than a window per stream. Chunks wait
//! in the connection's small bulk queue, which its writer serves only when no control
//! frame is waiting: an ask on the same connection waits behind at most one chunk.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

use crate::address::RpcAddress;
use crate::connection::{BulkFrame, Connection, EnqueueError, Out, ProtocolError};
use crate::env::RpcEnv;
use crate::error::RpcError;
use crate::frame::{self, Header};
use crate::log::quote;

/// Why a stream failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The other side ended the stream with this reason.
    #[error("stream from {peer} failed: {reason}")]
    Failed {
        /// The peer.
        peer: String,
        /// Its reason.
        reason: String,
    },
    /// The connection closed before the stream ended.
    #[error("connection to {peer} lost during the stream: {reason}")]
    ConnectionLost {
        /// The peer.
        peer: String,
        /// What ended the connection.
        reason: String,
    },
    /// The consumer stopped reading and ended the stream.
    #[error("the consumer at {peer} cancelled the stream")]
    Cancelled {
        /// The peer.
        peer: String,
    },
}

/// Serves streams opened by peers. Both methods refuse by default.
pub trait StreamHandler: Send + Sync + 'static {
    /// A peer wants to pull: produce the stream for `request` into `sink`.
    fn pull(
        self: Arc<Self>,
        from: RpcAddress,
        request: Bytes,
        sink: StreamSink,
    ) -> BoxFuture<'static, ()> {
        let _ = (from, request);
        Box::pin(async move { sink.fail("this stream handler does not serve pulls") })
    }

    /// A peer pushes a stream described by `meta`: consume it from `stream`.
    fn push(
        self: Arc<Self>,
        from: RpcAddress,
        meta: Bytes,
        stream: IncomingStream,
    ) -> BoxFuture<'static, ()> {
        let _ = (from, meta);
        drop(stream);
        Box::pin(async {})
    }
}

enum Item {
    Data(Bytes),
    End,
    Failed(StreamError),
}

struct Credit {
    state: Mutex<CreditState>,
    notify: Notify,
}

struct CreditState {
    chunks: u64,
    ended: Option<StreamError>,
}

enum Slot {
    Consumer(mpsc::Sender<Item>),
    Producer(Arc<Credit>),
}

/// The streams of one connection, keyed by (opened by this side, id).
#[derive(Default)]
pub(crate) struct StreamTable {
    slots: Mutex<HashMap<(bool, u64), Slot>>,
}

impl StreamTable {
    fn insert(&self, key: (bool, u64), slot: Slot) {
        self.slots.lock().insert(key, slot);
    }

    fn remove(&self, key: (bool, u64)) {
        self.slots.lock().remove(&key);
    }

    /// A chunk arrived for a stream this side consumes.
    pub(crate) fn on_data(&self, sid: u64, ours: bool, body: Bytes) -> Result<(), ProtocolError> {
        let tx = match self.slots.lock().get(&(ours, sid)) {
            Some(Slot::Consumer(tx)) => tx.clone(),
            Some(Slot::Producer(_)) => {
                return Err(ProtocolError::DataFromConsumer { sid });
            }
            // Cancelled or finished here; chunks still in flight are dropped.
            None => return Ok(()),
        };
        match tx.try_send(Item::Data(body)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(ProtocolError::OverCredit { sid }),
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
        }
    }

    /// The consumer granted credit for a stream this side produces.
    pub(crate) fn on_credit(&self, sid: u64, ours: bool, chunks: u32) {
        if let Some(Slot::Producer(c)) = self.slots.lock().get(&(ours, sid)) {
            c.state.lock().chunks += u64::from(chunks);
            c.notify.notify_waiters();
        }
    }

    /// The other side ended a stream: a producer finished or failed, or a consumer
    /// cancelled.
    pub(crate) fn on_end(&self, sid: u64, ours: bool, error: Option<&str>, peer: &RpcAddress) {
        let Some(slot) = self.slots.lock().remove(&(ours, sid)) else {
            return;
        };
        match slot {
            Slot::Consumer(tx) => {
                let item = match error {
                    None => Item::End,
                    Some(e) => Item::Failed(StreamError::Failed {
                        peer: peer.to_string(),
                        reason: e.to_string(),
                    }),
                };
                let _ = tx.try_send(item);
            }
            Slot::Producer(c) => {
                c.state.lock().ended = Some(match error {
                    Some(e) => StreamError::Failed {
                        peer: peer.to_string(),
                        reason: e.to_string(),
                    },
                    None => StreamError::Cancelled {
                        peer: peer.to_string(),
                    },
                });
                c.notify.notify_waiters();
            }
        }
    }

    /// The connection ended: every open stream fails.
    pub(crate) fn fail_all(&self, peer: &RpcAddress, reason: &str) {
        let slots: Vec<_> = self.slots.lock().drain().map(|(_, s)| s).collect();
        let err = StreamError::ConnectionLost {
            peer: peer.to_string(),
            reason: reason.to_string(),
        };
        for s in slots {
            match s {
                Slot::Consumer(tx) => {
                    let _ = tx.try_send(Item::Failed(err.clone()));
                }
                Slot::Producer(c) => {
                    c.state.lock().ended = Some(err.clone());
                    c.notify.notify_waiters();
                }
            }
        }
    }

    /// Open streams (for tests and status).
    pub(crate) fn len(&self) -> usize {
        self.slots.lock().len()
    }
}

fn encode(header: &Header<'_>, body: &[u8]) -> Vec<u8> {
    // Stream headers hold no strings beyond short reasons; encoding cannot fail.
    frame::encode_raw(header, body).unwrap_or_default()
}

/// The consuming end of a stream.
pub struct IncomingStream {
    rx: mpsc::Receiver<Item>,
    conn: Arc<Connection>,
    sid: u64,
    ours: bool,
    window: u32,
    unacked: u32,
    done: bool,
}

impl IncomingStream {
    fn new(conn: Arc<Connection>, sid: u64, ours: bool, window: u32) -> (Self, mpsc::Sender<Item>) {
        let (tx, rx) = mpsc::channel(window as usize + 1);
        (
            IncomingStream {
                rx,
                conn,
                sid,
                ours,
                window,
                unacked: 0,
                done: false,
            },
            tx,
        )
    }

    /// The next chunk; `None` once the producer finished.
    pub async fn next(&mut self) -> Option<Result<Bytes, StreamError>> {
        if self.done {
            return None;
        }
        let item = self.rx.recv().await;
        match item {
            Some(Item::Data(b)) => {
                self.unacked += 1;
                // Return credit in batches of half a window.
                if self.unacked >= (self.window / 2).max(1) {
                    let chunks = std::mem::take(&mut self.unacked);
                    self.conn.send_owed(encode(
                        &Header::StreamCredit {
                            sid: self.sid,
                            opener: self.ours,
                            chunks,
                        },
                        &[],
                    ));
                }
                Some(Ok(b))
            }
            Some(Item::End) => {
                self.done = true;
                None
            }
            Some(Item::Failed(e)) => {
                self.done = true;
                Some(Err(e))
            }
            None => {
                self.done = true;
                Some(Err(StreamError::ConnectionLost {
                    peer: self.conn.peer().to_string(),
                    reason: "the connection closed".into(),
                }))
            }
        }
    }

    /// The peer at the other end.
    pub fn peer(&self) -> &RpcAddress {
        self.conn.peer()
    }
}

impl Drop for IncomingStream {
    fn drop(&mut self) {
        if !self.done {
            self.conn.streams.remove((self.ours, self.sid));
            self.conn.send_owed(encode(
                &Header::StreamEnd {
                    sid: self.sid,
                    opener: self.ours,
                    error: Some("the consumer cancelled the stream"),
                },
                &[],
            ));
        }
    }
}

/// The producing end of a stream.
pub struct StreamSink {
    conn: Arc<Connection>,
    sid: u64,
    ours: bool,
    credit: Arc<Credit>,
    chunk: usize,
    done: bool,
}

impl StreamSink {
    fn new(
        conn: Arc<Connection>,
        sid: u64,
        ours: bool,
        initial: u64,
        chunk: usize,
    ) -> (Self, Arc<Credit>) {
        let credit = Arc::new(Credit {
            state: Mutex::new(CreditState {
                chunks: initial,
                ended: None,
            }),
            notify: Notify::new(),
        });
        (
            StreamSink {
                conn,
                sid,
                ours,
                credit: credit.clone(),
                chunk,
                done: false,
            },
            credit,
        )
    }

    /// Bytes per chunk: `send` cuts larger buffers to this size.
    pub fn chunk_size(&self) -> usize {
        self.chunk
    }

    async fn take_credit(&self) -> Result<(), StreamError> {
        loop {
            let notified = self.credit.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.credit.state.lock();
                if let Some(e) = &st.ended {
                    return Err(e.clone());
                }
                if st.chunks > 0 {
                    st.chunks -= 1;
                    return Ok(());
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = self.conn.closed.cancelled() => {
                    return Err(StreamError::ConnectionLost {
                        peer: self.conn.peer().to_string(),
                        reason: "the connection closed".into(),
                    })
                }
            }
        }
    }

    /// Sends `data`, in chunks, each once the consumer has credit for it.
    pub async fn send(&mut self, data: Bytes) -> Result<(), StreamError> {
        let mut at = 0;
        while at < data.len() {
            let end = (at + self.chunk).min(data.len());
            self.take_credit().await?;
            // The chunk is written from `data` itself, behind its own small header.
            let frame = BulkFrame {
                head: frame::encode_head(
                    &Header::StreamData {
                        sid: self.sid,
                        opener: self.ours,
                    },
                    end - at,
                )
                .unwrap_or_default(),
                body: data.slice(at..end),
            };
            if self.conn.enqueue_bulk(frame).await.is_err() {
                return Err(StreamError::ConnectionLost {
                    peer: self.conn.peer().to_string(),
                    reason: "the connection closed".into(),
                });
            }
            at = end;
        }
        Ok(())
    }

    async fn end(&mut self, error: Option<&str>) -> Result<(), StreamError> {
        self.done = true;
        self.conn.streams.remove((self.ours, self.sid));
        let frame = encode(
            &Header::StreamEnd {
                sid: self.sid,
                opener: self.ours,
                error,
            },
            &[],
        );
        // Behind this stream's chunks, in the bulk queue, so it cannot overtake them.
        self.conn
            .enqueue_bulk(BulkFrame {
                head: frame,
                body: Bytes::new(),
            })
            .await
            .map_err(|_| StreamError::ConnectionLost {
                peer: self.conn.peer().to_string(),
                reason: "the connection closed".into(),
            })
    }

    /// Ends the stream successfully after everything sent so far.
    pub async fn finish(mut self) -> Result<(), StreamError> {
        self.end(None).await
    }

    /// Ends the stream with an error the consumer sees.
    pub fn fail(mut self, reason: impl std::fmt::Display) {
        let reason = reason.to_string();
        let conn = self.conn.clone();
        self.done = true;
        conn.streams.remove((self.ours, self.sid));
        let frame = encode(
            &Header::StreamEnd {
                sid: self.sid,
                opener: self.ours,
                error: Some(&reason),
            },
            &[],
        );
        // The consumer has stopped receiving our chunks' meaning; order with them does
        // not matter once the stream has failed.
        conn.send_owed(frame);
    }
}

impl Drop for StreamSink {
    fn drop(&mut self) {
        if !self.done {
            self.conn.streams.remove((self.ours, self.sid));
            self.conn.send_owed(encode(
                &Header::StreamEnd {
                    sid: self.sid,
                    opener: self.ours,
                    error: Some("the producer dropped the stream without finishing it"),
                },
                &[],
            ));
        }
    }
}

/// A peer opened a stream towards our handler `to`.
pub(crate) fn on_open(
    env: &RpcEnv,
    conn: &Arc<Connection>,
    sid: u64,
    to: &str,
    pull: bool,
    window: u32,
    body: Bytes,
) -> Result<(), ProtocolError> {
    let key = (false, sid);
    if conn.streams.slots.lock().contains_key(&key) {
        return Err(ProtocolError::OpenedTwice { sid });
    }
    let Some(handler) = env.stream_handler(to) else {
        let why = format!(
            "no stream handler named {} at {}",
            quote(to),
            env.describe()
        );
        env.dropped_log().warn((conn.peer(), "stream"), || {
            format!("stream from {} refused: {why}", conn.peer())
        });
        conn.send_owed(encode(
            &Header::StreamEnd {
                sid,
                opener: false,
                error: Some(&why),
            },
            &[],
        ));
        return Ok(());
    };
    let from = conn.peer().clone();
    let conf = &env.inner.conf;
    if pull {
        let (sink, credit) = StreamSink::new(
            conn.clone(),
            sid,
            false,
            u64::from(window),
            conf.stream_chunk,
        );
        conn.streams.insert(key, Slot::Producer(credit));
        env.inner.tracker.spawn(handler.pull(from, body, sink));
    } else {
        let window = conf.stream_window as u32;
        let (stream, tx) = IncomingStream::new(conn.clone(), sid, false, window);
        conn.streams.insert(key, Slot::Consumer(tx));
        conn.send_owed(encode(
            &Header::StreamCredit {
                sid,
                opener: false,
                chunks: window,
            },
            &[],
        ));
        env.inner.tracker.spawn(handler.push(from, body, stream));
    }
    Ok(())
}

impl RpcEnv {
    /// Registers a handler for streams opened towards `name` by peers.
    pub fn register_stream_handler(
        &self,
        name: &str,
        handler: Arc<dyn StreamHandler>,
    ) -> Result<(), RpcError> {
        let mut map = self.inner.stream_handlers.write();
        if map.contains_key(name) {
            return Err(RpcError::NameTaken(name.to_string()));
        }
        map.insert(name.into(), handler);
        Ok(())
    }

    pub(crate) fn stream_handler(&self, name: &str) -> Option<Arc<dyn StreamHandler>> {
        self.inner.stream_handlers.read().get(name).cloned()
    }

    async fn open_frame(
        &self,
        addr: &RpcAddress,
        frame: Vec<u8>,
    ) -> Result<Arc<Connection>, RpcError> {
        let not_delivered = |reason: String| {
            RpcError::Ask(crate::AskError::NotDelivered {
                to: format!("stream handler at {addr}"),
                reason,
            })
        };
        let conn = self
            .outbox(addr)
            .map_err(|e| not_delivered(e.to_string()))?;
        let out = Out {
            bytes: frame.into(),
            ask: None,
        };
        match conn.try_enqueue(out) {
            Ok(()) => Ok(conn),
            Err(EnqueueError::Full(out)) => match conn.enqueue_wait(out).await {
                Ok(()) => Ok(conn),
                Err(_) => Err(not_delivered("the connection closed".into())),
            },
            Err(EnqueueError::Closed(_)) => Err(not_delivered("the connection closed".into())),
        }
    }

    /// Pulls a stream from the handler `name` at `addr`, which produces it for
    /// `request`.
    pub async fn pull_stream(
        &self,
        addr: &RpcAddress,
        name: &str,
        request: Bytes,
    ) -> Result<IncomingStream, RpcError> {
        let sid = self.next_request_id();
        let window = self.inner.conf.stream_window as u32;
        let frame = encode(
            &Header::StreamOpen {
                sid,
                to: name,
                pull: true,
                window,
            },
            &request,
        );
        let conn = self.outbox(addr).map_err(|e| {
            RpcError::Ask(crate::AskError::NotDelivered {
                to: format!("stream handler {name} at {addr}"),
                reason: e.to_string(),
            })
        })?;
        let (stream, tx) = IncomingStream::new(conn.clone(), sid, true, window);
        conn.streams.insert((true, sid), Slot::Consumer(tx));
        self.open_frame(addr, frame).await?;
        Ok(stream)
    }

    /// Pushes a stream described by `meta` to the handler `name` at `addr`; send the
    /// data through the returned sink, then `finish` it.
    pub async fn push_stream(
        &self,
        addr: &RpcAddress,
        name: &str,
        meta: Bytes,
    ) -> Result<StreamSink, RpcError> {
        let sid = self.next_request_id();
        let frame = encode(
            &Header::StreamOpen {
                sid,
                to: name,
                pull: false,
                window: 0,
            },
            &meta,
        );
        let conn = self.outbox(addr).map_err(|e| {
            RpcError::Ask(crate::AskError::NotDelivered {
                to: format!("stream handler {name} at {addr}"),
                reason: e.to_string(),
            })
        })?;
        let (sink, credit) =
            StreamSink::new(conn.clone(), sid, true, 0, self.inner.conf.stream_chunk);
        conn.streams.insert((true, sid), Slot::Producer(credit));
        self.open_frame(addr, frame).await?;
        Ok(sink)
    }
}
