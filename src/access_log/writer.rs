//! The one thread that writes access log lines, so that file I/O never runs on the event loop.
//!
//! Lines arrive through a bounded queue; a full queue drops the line (counted in the metrics,
//! warned about at most once a minute) rather than block a connection. The thread buffers per
//! destination and flushes whenever the queue runs empty, and at least once a second under
//! constant load. Files are kept open by path and reopened on request (`SIGUSR1`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Destination, open};
use crate::metrics;

/// Lines waiting for the writer at most; about 2 MB of typical lines.
const QUEUE: usize = 8192;
/// The longest a written line stays in a buffer.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Per-file buffer.
const BUFFER: usize = 64 * 1024;
/// Warnings about drops and write errors come at most this often.
const WARN_EVERY: u64 = 60;
/// How long the last lines may take to be written at exit.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

enum Message {
    Line(Arc<Destination>, Vec<u8>),
    /// Reopen now, if [`Writer::reopen`] is still set: lines queued after this go to the new
    /// files. (Should the queue be full, the flag alone is seen after the next batch.)
    Reopen,
    /// Write everything queued, flush, answer, and end.
    Stop(mpsc::Sender<()>),
}

struct Writer {
    queue: SyncSender<Message>,
    /// Set by [`reopen`]; the writer reopens every file once it sees it.
    reopen: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

static WRITER: OnceLock<Writer> = OnceLock::new();

/// The writer, started on first use.
fn writer() -> &'static Writer {
    WRITER.get_or_init(|| {
        let (queue, lines) = mpsc::sync_channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&reopen);
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || run(lines, &flag))
            .map_err(|e| log::error!("cannot start the access log writer: {e}"))
            .ok();
        Writer {
            queue,
            reopen,
            thread: Mutex::new(thread),
        }
    })
}

/// Queues one line; drops it if the writer is behind.
pub(super) fn send(destination: &Arc<Destination>, line: Vec<u8>) {
    let message = Message::Line(Arc::clone(destination), line);
    if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
        writer().queue.try_send(message)
    {
        let metrics = metrics::get();
        metrics.access_log_dropped();
        if rate_limited(&LAST_DROP_WARNING) {
            log::warn!(
                "the access log writer is behind: lines are being dropped ({} so far)",
                metrics.access_log_dropped_total()
            );
        }
    }
}

/// Reopens every log file (after logrotate moved them).
pub fn reopen() {
    let writer = writer();
    writer.reopen.store(true, Relaxed);
    // A full queue means the writer is busy and will see the flag anyway.
    let _ = writer.queue.try_send(Message::Reopen);
}

/// Writes every queued line and flushes, waiting a few seconds at most. Lines sent after this
/// are dropped. Call it once, at exit.
pub fn shutdown() {
    let Some(writer) = WRITER.get() else {
        return; // nothing was ever logged
    };
    let (done, finished) = mpsc::channel();
    if writer.queue.send(Message::Stop(done)).is_ok()
        && finished.recv_timeout(SHUTDOWN_WAIT).is_ok()
        && let Some(thread) = writer.thread.lock().ok().and_then(|mut t| t.take())
    {
        let _ = thread.join();
    }
}

static LAST_DROP_WARNING: AtomicU64 = AtomicU64::new(0);
static LAST_WRITE_WARNING: AtomicU64 = AtomicU64::new(0);

/// True at most once per [`WARN_EVERY`] seconds for each `last`.
fn rate_limited(last: &AtomicU64) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let previous = last.load(Relaxed);
    (previous == 0 || now >= previous + WARN_EVERY)
        && last
            .compare_exchange(previous, now.max(1), Relaxed, Relaxed)
            .is_ok()
}

/// The writer thread's loop.
fn run(lines: Receiver<Message>, reopen: &AtomicBool) {
    let mut outputs = Outputs {
        open: HashMap::new(),
        reopen,
    };
    let mut last_flush = Instant::now();
    loop {
        let wait = FLUSH_EVERY.saturating_sub(last_flush.elapsed());
        let mut stop = match lines.recv_timeout(wait) {
            Ok(message) => outputs.take(message),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return outputs.flush(),
        };
        // Whatever else is queued, without waiting, but flushing at least once a second.
        while stop.is_none() && last_flush.elapsed() < FLUSH_EVERY {
            match lines.try_recv() {
                Ok(message) => stop = outputs.take(message),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if let Some(done) = stop {
            // Lines queued before the stop are written too.
            while let Ok(message) = lines.try_recv() {
                let _ = outputs.take(message);
            }
            outputs.flush();
            let _ = done.send(());
            return;
        }
        outputs.flush();
        last_flush = Instant::now();
        if reopen.swap(false, Relaxed) {
            outputs.reopen();
        }
    }
}

/// The open destinations, by destination.
struct Outputs<'a> {
    open: HashMap<Arc<Destination>, Output>,
    reopen: &'a AtomicBool,
}

enum Output {
    /// Written a whole buffer of lines at a time, each write under the stderr lock, so lines
    /// never interleave with sluice's own log.
    Stderr(BufWriter<io::Stderr>),
    /// `None` after a failed open or write: the next line tries again.
    File(Option<BufWriter<File>>),
}

impl Outputs<'_> {
    /// Handles one message; a stop is returned to the loop.
    fn take(&mut self, message: Message) -> Option<mpsc::Sender<()>> {
        match message {
            Message::Line(destination, line) => self.write(destination, &line),
            Message::Reopen => {
                if self.reopen.swap(false, Relaxed) {
                    self.reopen();
                }
            }
            Message::Stop(done) => return Some(done),
        }
        None
    }

    fn write(&mut self, destination: Arc<Destination>, line: &[u8]) {
        let output =
            self.open
                .entry(Arc::clone(&destination))
                .or_insert_with(|| match &*destination {
                    Destination::Stderr => {
                        Output::Stderr(BufWriter::with_capacity(BUFFER, io::stderr()))
                    }
                    Destination::File(_) => Output::File(None),
                });
        let file = match output {
            Output::Stderr(stderr) => {
                if let Err(error) = stderr.write_all(line) {
                    failed(&destination, &error);
                }
                return;
            }
            Output::File(file) => file,
        };
        let Destination::File(path) = &*destination else {
            return;
        };
        if file.is_none() {
            match open(path) {
                Ok(opened) => *file = Some(BufWriter::with_capacity(BUFFER, opened)),
                Err(error) => {
                    metrics::get().access_log_dropped();
                    return failed(&destination, &error);
                }
            }
        }
        if let Some(writer) = file
            && let Err(error) = writer.write_all(line)
        {
            failed(&destination, &error);
            *file = None;
        }
    }

    /// Writes every buffer out.
    fn flush(&mut self) {
        for (destination, output) in &mut self.open {
            let result = match output {
                Output::Stderr(stderr) => stderr.flush(),
                Output::File(Some(file)) => file.flush(),
                Output::File(None) => Ok(()),
            };
            if let Err(error) = result {
                failed(destination, &error);
                if let Output::File(file) = output {
                    *file = None;
                }
            }
        }
    }

    /// Flushes, closes and reopens every file, so lines go to a file at the same path again.
    fn reopen(&mut self) {
        self.flush();
        for (destination, output) in &mut self.open {
            if let (Destination::File(path), Output::File(file)) = (&**destination, output) {
                *file = None;
                match open(path) {
                    Ok(opened) => *file = Some(BufWriter::with_capacity(BUFFER, opened)),
                    Err(error) => failed(destination, &error),
                }
            }
        }
    }
}

/// Reports a failed open or write, at most once a minute.
fn failed(destination: &Destination, error: &io::Error) {
    if rate_limited(&LAST_WRITE_WARNING) {
        let shown = match destination {
            Destination::Stderr => "standard error".to_string(),
            Destination::File(path) => format!("\"{}\"", path.display()),
        };
        log::error!("cannot write the access log to {shown}: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_rate_limited() {
        let last = AtomicU64::new(0);
        assert!(rate_limited(&last));
        assert!(!rate_limited(&last));
        last.store(last.load(Relaxed) - WARN_EVERY, Relaxed);
        assert!(rate_limited(&last));
        assert!(!rate_limited(&last));
    }
}
