//! The threads that serve connections: one single-threaded tokio runtime per worker
//! (`worker_processes`), as nginx runs one event loop per worker process.
//!
//! Every listening socket is watched by every worker; the worker that accepts a connection
//! serves it to its end, with its upstream connections, its timers and its tunnel. No task
//! moves between threads and no thread wakes another to share work: under a work-stealing
//! runtime, forwarding a request cost about one cross-thread wake-up (a futex call) on
//! average (see docs/performance.md).

use std::cell::Cell;
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::config::directive::{MAIN, Spec};
use crate::config::{ConfigError, Cx, Directive};

/// `worker_processes N | auto;`, in the main context as in nginx.
pub const DIRECTIVES: &[Spec] = &[Spec::used("worker_processes", MAIN, (1, 1), true)];

/// More workers than this is a typo, not a machine.
const MAX_WORKERS: usize = 1024;

/// Applies `worker_processes`: `auto` (`None`, one worker per core) or a count.
pub fn set(
    cx: &mut Cx,
    directive: &Directive,
    workers: &mut Option<usize>,
) -> Result<(), ConfigError> {
    if directive.args[0] == "auto" {
        *workers = None;
        return Ok(());
    }
    let count = cx.count(directive)?;
    if count > MAX_WORKERS {
        return Err(cx.error(
            directive,
            format!("\"worker_processes\" may be at most {MAX_WORKERS}"),
        ));
    }
    *workers = Some(count);
    Ok(())
}

thread_local! {
    /// The index of the worker running on this thread; 0 on any other thread.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker the caller runs on (0 outside the workers): state kept per worker,
/// such as idle upstream connections, is looked up by it.
pub fn current() -> usize {
    INDEX.with(Cell::get)
}

/// Where new connections are served: a handle to each worker's runtime.
#[derive(Clone)]
pub struct Spawner {
    handles: Arc<[Handle]>,
}

impl Spawner {
    /// The runtime of the caller as the only worker (tests and embedders that bring their own
    /// runtime). Must be called inside a tokio runtime.
    pub fn current() -> Spawner {
        Spawner {
            handles: Arc::new([Handle::current()]),
        }
    }

    /// One handle per worker, in the order of their indexes.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

/// The running worker threads.
pub struct Workers {
    spawner: Spawner,
    threads: Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Workers {
    /// Starts `count` workers (at least one), each a thread with a runtime of its own.
    pub fn start(count: usize) -> io::Result<Workers> {
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("sluice-worker-{index}"))
                .spawn(move || {
                    INDEX.with(|i| i.set(index));
                    let _ = runtime.block_on(stopped);
                    // Connections still open are dropped; a bcrypt check in flight is not
                    // waited for.
                    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
                })?;
            threads.push((stop, thread));
        }
        Ok(Workers {
            spawner: Spawner {
                handles: handles.into(),
            },
            threads,
        })
    }

    /// How many workers to run for `worker_processes` (`None`: `auto`, one per core).
    pub fn count(configured: Option<usize>) -> usize {
        configured.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    pub fn spawner(&self) -> Spawner {
        self.spawner.clone()
    }

    /// Stops every worker, dropping the connections they still serve, and waits for them.
    pub fn stop(self) {
        for (stop, thread) in self.threads {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}
