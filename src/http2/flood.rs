//! Floods of frames that cost sluice work and the client nothing (RFC 9113 §10.5).
//!
//! The `h2` crate bounds the memory of each kind of frame (one pending PING answer and one
//! pending SETTINGS acknowledgement at a time, a header list size, a CONTINUATION count, a
//! queue of streams reset before they were accepted), but answers PINGs and SETTINGS as fast as
//! they come and lets a client open and reset streams forever (CVE-2023-44487, "rapid reset":
//! each stream may have started a policy check, a lookup and a dial that nobody waits for).
//! So the bytes the client sends are read through a [`Guard`] that looks at each frame's
//! 9-byte header, never the payload, and keeps two budgets per connection: streams reset by
//! the client before sluice answered them, and frames that ask for nothing (PING, SETTINGS,
//! PRIORITY, empty DATA). Each is a token bucket: a burst, refilled at a steady rate. A
//! connection over either budget is told ENHANCE_YOUR_CALM in a GOAWAY and closed; nothing
//! more of what it sent is read.
//!
//! The reset of a stream sluice has answered (a tunnel's `200`, a response's head) is free:
//! it is how a browser closes a finished tunnel, and the client waited a round trip for the
//! answer, so such streams cost no more than HTTP/1.1 connections opened and closed, and no
//! more are served at once than `http2_max_concurrent_streams`. The frame headers do not say
//! whether a stream was answered; the streams' tasks do, in the connection's [`Answered`].

use std::collections::HashSet;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::preface::PREFACE;

/// Frames that ask for nothing a client may send at once; then [`CONTROL_RATE`] a second.
const CONTROL_BURST: f64 = 100.0;
const CONTROL_RATE: f64 = 10.0;

/// The budgets of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    /// Unanswered streams the client may reset at once (RST_STREAM)...
    pub reset_burst: f64,
    /// ...and then each second.
    pub reset_rate: f64,
}

impl Budgets {
    /// A browser cancels streams it no longer needs, answered or not (a tab closed while its
    /// page loads), so a burst as large as two full sets of streams is allowed, then a tenth
    /// of a set a second: far more than pages cancel, far less than a flood.
    pub fn for_streams(max_concurrent_streams: u32) -> Budgets {
        let streams = f64::from(max_concurrent_streams);
        Budgets {
            reset_burst: 2.0 * streams,
            reset_rate: (streams / 10.0).max(1.0),
        }
    }
}

/// What made a connection go over its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    Resets,
    ControlFrames,
}

/// Shared between the [`Guard`] and its connection: set once a budget is spent.
#[derive(Debug, Default)]
pub struct Alarm {
    flood: std::sync::OnceLock<Flood>,
    tripped: AtomicBool,
    notify: Notify,
}

impl Alarm {
    /// Resolves once the connection went over a budget, with what it flooded.
    pub async fn tripped(&self) -> Flood {
        loop {
            let notified = self.notify.notified();
            if let Some(&flood) = self.flood.get() {
                return flood;
            }
            notified.await;
        }
    }

    fn trip(&self, flood: Flood) {
        let _ = self.flood.set(flood);
        self.tripped.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn is_tripped(&self) -> bool {
        self.tripped.load(Ordering::Acquire)
    }
}

/// The streams of a connection that sluice has answered and whose tasks still run: the first
/// reset of one of them is not spent from the budget. Shared by the [`Guard`], which looks ids
/// up for RST_STREAMs only, and the streams' tasks, which each write their id twice at most;
/// it holds no more ids than streams served at once.
#[derive(Debug, Default)]
pub struct Answered {
    ids: Mutex<HashSet<u32>>,
}

impl Answered {
    /// The record of stream `id`, kept until its task drops it.
    pub fn stream(self: &Arc<Self>, id: u32) -> StreamRecord {
        StreamRecord {
            answered: Arc::clone(self),
            id,
            recorded: false,
        }
    }

    fn ids(&self) -> std::sync::MutexGuard<'_, HashSet<u32>> {
        // The set stays whole whatever panicked while holding it.
        self.ids.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether stream `id` was answered, and forgets it: a stream is reset once, so the
    /// same reset sent again is spent from the budget like any other.
    fn take(&self, id: u32) -> bool {
        self.ids().remove(&id)
    }
}

/// One stream's place in [`Answered`]: marked before its answer is sent, gone when its task
/// ends (a later reset of the id is a stray frame, counted as any other).
#[derive(Debug)]
pub struct StreamRecord {
    answered: Arc<Answered>,
    id: u32,
    recorded: bool,
}

impl StreamRecord {
    /// The stream is about to be answered: from now on the client may reset it for free.
    pub fn answering(&mut self) {
        if !self.recorded {
            self.answered.ids().insert(self.id);
            self.recorded = true;
        }
    }
}

impl Drop for StreamRecord {
    fn drop(&mut self) {
        if self.recorded {
            self.answered.ids().remove(&self.id);
        }
    }
}

/// A token bucket.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    burst: f64,
    rate: f64,
    last: Instant,
}

impl Bucket {
    fn new(burst: f64, rate: f64) -> Bucket {
        Bucket {
            tokens: burst,
            burst,
            rate,
            last: Instant::now(),
        }
    }

    /// Takes one token; `false` when there is none.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Frame types (RFC 9113 §6) and the flag bits that matter here.
const DATA: u8 = 0x0;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;

/// Follows the frame headers in the bytes a client sends, spending its budgets.
#[derive(Debug)]
struct Scanner {
    /// Preface bytes still to pass.
    preface: usize,
    /// The frame header being read, and how much of it is in.
    header: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    payload: usize,
    resets: Bucket,
    control: Bucket,
    answered: Arc<Answered>,
}

impl Scanner {
    fn new(budgets: Budgets, answered: Arc<Answered>) -> Scanner {
        Scanner {
            preface: PREFACE.len(),
            header: [0; 9],
            have: 0,
            payload: 0,
            resets: Bucket::new(budgets.reset_burst, budgets.reset_rate),
            control: Bucket::new(CONTROL_BURST, CONTROL_RATE),
            answered,
        }
    }

    /// Passes `bytes` (the next the client sent); `Err` once a budget is spent.
    fn scan(&mut self, mut bytes: &[u8]) -> Result<(), Flood> {
        while !bytes.is_empty() {
            if self.preface > 0 {
                let n = self.preface.min(bytes.len());
                self.preface -= n;
                bytes = &bytes[n..];
            } else if self.payload > 0 {
                let n = self.payload.min(bytes.len());
                self.payload -= n;
                bytes = &bytes[n..];
            } else {
                let n = (9 - self.have).min(bytes.len());
                self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                self.have += n;
                bytes = &bytes[n..];
                if self.have == 9 {
                    self.have = 0;
                    self.frame()?;
                }
            }
        }
        Ok(())
    }

    /// A whole frame header has arrived.
    fn frame(&mut self) -> Result<(), Flood> {
        let [l0, l1, l2, kind, flags, s0, s1, s2, s3] = self.header;
        let length = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
        self.payload = length;
        let asks_nothing = match kind {
            PING | SETTINGS => flags & ACK == 0,
            PRIORITY => true,
            DATA => length == 0 && flags & END_STREAM == 0,
            _ => false,
        };
        if kind == RST_STREAM {
            // The high bit is reserved (RFC 9113 §4.1).
            let stream = u32::from_be_bytes([s0, s1, s2, s3]) & 0x7fff_ffff;
            if !self.answered.take(stream) && !self.resets.take() {
                return Err(Flood::Resets);
            }
        }
        if asks_nothing && !self.control.take() {
            return Err(Flood::ControlFrames);
        }
        Ok(())
    }
}

/// A client connection read through a [`Scanner`]. Once a budget is spent it reads nothing
/// more: the connection's [`Alarm`] has fired, and the connection closes with a GOAWAY.
pub struct Guard<S> {
    inner: S,
    scanner: Scanner,
    alarm: Arc<Alarm>,
}

impl<S> Guard<S> {
    pub fn new(inner: S, budgets: Budgets, answered: Arc<Answered>, alarm: Arc<Alarm>) -> Guard<S> {
        Guard {
            inner,
            scanner: Scanner::new(budgets, answered),
            alarm,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.alarm.is_tripped() {
            // The connection is being closed; the alarm wakes its task.
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read
            && let Err(flood) = this.scanner.scan(&buf.filled()[before..])
        {
            this.alarm.trip(flood);
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn budgets() -> Budgets {
        Budgets {
            reset_burst: 4.0,
            reset_rate: 0.001,
        }
    }

    #[test]
    fn resets_over_the_burst_are_a_flood_whatever_the_read_sizes() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[]));
        for id in 0..5u32 {
            bytes.extend(frame(0x1, 0x4, 2 * id + 1, &[0x82; 20]));
            bytes.extend(frame(RST_STREAM, 0, 2 * id + 1, &[0, 0, 0, 8]));
        }
        for step in [1, 7, bytes.len()] {
            let mut scanner = Scanner::new(budgets(), Arc::default());
            let results: Vec<_> = bytes.chunks(step).map(|c| scanner.scan(c)).collect();
            assert!(results.contains(&Err(Flood::Resets)), "step {step}");
        }
        let mut scanner = Scanner::new(budgets(), Arc::default());
        let four = bytes.len() - 9 - 4;
        assert_eq!(scanner.scan(&bytes[..four]), Ok(()));
    }

    #[test]
    fn resets_of_answered_streams_are_free_while_their_tasks_run() {
        let answered = Arc::new(Answered::default());
        let mut scanner = Scanner::new(budgets(), Arc::clone(&answered));
        scanner.scan(PREFACE).unwrap();
        let reset = |id: u32| frame(RST_STREAM, 0, id, &[0, 0, 0, 8]);
        let records: Vec<StreamRecord> = (0..100u32)
            .map(|i| {
                let mut record = answered.stream(2 * i + 1);
                record.answering();
                record
            })
            .collect();
        // A stream whose record exists but was not answered yet still counts.
        let unanswered = answered.stream(1001);
        for id in (0..100u32).map(|i| 2 * i + 1) {
            assert_eq!(scanner.scan(&reset(id)), Ok(()), "stream {id}");
        }
        // The same reset again, the reserved bit set or not (RFC 9113 §4.1), is no longer
        // free; nor is one of a stream not answered yet.
        assert_eq!(scanner.scan(&reset(1 | 1 << 31)), Ok(()));
        assert_eq!(scanner.scan(&reset(3)), Ok(()));
        assert_eq!(scanner.scan(&reset(1001)), Ok(()));
        assert_eq!(scanner.scan(&reset(1001)), Ok(()));
        assert_eq!(scanner.scan(&reset(1001)), Err(Flood::Resets));
        // A record is gone with its task: the set holds only streams still served.
        let mut record = answered.stream(2001);
        record.answering();
        drop((records, unanswered, record));
        assert!(answered.ids().is_empty());
    }

    #[test]
    fn pings_are_a_flood_but_their_acks_and_data_are_not() {
        let mut scanner = Scanner::new(budgets(), Arc::default());
        scanner.scan(PREFACE).unwrap();
        for _ in 0..1000 {
            scanner.scan(&frame(PING, ACK, 0, &[0; 8])).unwrap();
            scanner.scan(&frame(DATA, 0, 1, &[1; 100])).unwrap();
            scanner.scan(&frame(DATA, END_STREAM, 3, &[])).unwrap();
        }
        let pings: Result<Vec<()>, Flood> = (0..200)
            .map(|_| scanner.scan(&frame(PING, 0, 0, &[0; 8])))
            .collect();
        assert_eq!(pings, Err(Flood::ControlFrames));
    }
}
