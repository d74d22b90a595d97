//! Connection limits: `max_connections` over the whole process and
//! `max_connections_per_client` per server block, held as permits that give their place back
//! when the connection's task ends; the open-file limit the process runs with; and bandwidth
//! limits ([`rate`]).

pub mod rate;
pub mod settings;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::metrics::Open;

/// Counts open connections against an optional limit, which a reload may change.
#[derive(Debug, Default)]
pub struct Gauge {
    /// `usize::MAX` when there is no limit.
    limit: AtomicUsize,
    open: AtomicUsize,
    /// Woken when a place frees up or the limit changes, for those waiting in [`Gauge::acquire`].
    freed: Notify,
}

/// One place in a [`Gauge`], returned on drop.
#[derive(Debug)]
pub struct Permit(Arc<Gauge>);

impl Gauge {
    pub fn new(limit: Option<usize>) -> Arc<Gauge> {
        Arc::new(Gauge {
            limit: AtomicUsize::new(limit.unwrap_or(usize::MAX)),
            open: AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    /// A new limit for places taken from now on; places already taken stay.
    pub fn set_limit(&self, limit: Option<usize>) {
        self.limit
            .store(limit.unwrap_or(usize::MAX), Ordering::Release);
        self.freed.notify_waiters();
    }

    /// A place, waiting for one to free up while the limit is reached.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        loop {
            // Registered before the attempt, so a place freed in between is not missed.
            let freed = self.freed.notified();
            let mut freed = std::pin::pin!(freed);
            freed.as_mut().enable();
            if let Some(permit) = self.try_acquire() {
                return permit;
            }
            freed.await;
        }
    }

    /// A place, unless the limit is reached.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let limit = self.limit.load(Ordering::Acquire);
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < limit).then_some(open + 1)
            })
            .ok()?;
        Some(Permit(Arc::clone(self)))
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.freed.notify_waiters();
    }
}

/// Counts open connections per client address against an optional limit, which a reload may
/// change: the counts outlive the configuration, so a reload admits no one over the limit.
#[derive(Debug, Default)]
pub struct PerClient {
    /// `usize::MAX` when there is no limit.
    limit: AtomicUsize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One client's place in a [`PerClient`], returned on drop.
#[derive(Debug)]
pub struct ClientPermit {
    owner: Arc<PerClient>,
    client: IpAddr,
}

impl PerClient {
    pub fn new(limit: Option<usize>) -> Arc<PerClient> {
        Arc::new(PerClient {
            limit: AtomicUsize::new(limit.unwrap_or(usize::MAX)),
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A new limit for places taken from now on; places already taken stay counted.
    /// Connections opened while there was no limit are not counted against a new one.
    pub fn set_limit(&self, limit: Option<usize>) {
        self.limit
            .store(limit.unwrap_or(usize::MAX), Ordering::Release);
    }

    /// A place for `client`, unless it already holds the limit. Without a limit nothing is
    /// counted, so the common case takes no lock.
    pub fn try_acquire(self: &Arc<Self>, client: IpAddr) -> Option<Option<ClientPermit>> {
        let limit = self.limit.load(Ordering::Acquire);
        if limit == usize::MAX {
            return Some(None);
        }
        let client = client.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(client).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Some(ClientPermit {
            owner: Arc::clone(self),
            client,
        }))
    }
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// A connection's places in the limits it counts against, and its count in
/// `sluice_connections_open`, given back when dropped. They travel with whichever task owns
/// the connection (a tunnel outlives the task that opened it).
#[derive(Debug)]
pub struct Places {
    _process: Option<Permit>,
    _client: Option<ClientPermit>,
    _open: Option<Open>,
}

impl Places {
    pub fn new(process: Permit, client: Option<ClientPermit>, open: Open) -> Places {
        Places {
            _process: Some(process),
            _client: client,
            _open: Some(open),
        }
    }

    /// No place: for an HTTP/2 stream, whose connection holds the places it counts in.
    pub fn none() -> Places {
        Places {
            _process: None,
            _client: None,
            _open: None,
        }
    }
}

/// Raises the soft open-file limit to the hard one, since every connection costs one or two
/// descriptors. Returns the limit now in force.
pub fn raise_open_file_limit() -> std::io::Result<libc::rlim_t> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                return Ok(limit.rlim_cur);
            }
            return Ok(raised.rlim_cur);
        }
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_returned_on_drop() {
        let gauge = Gauge::new(Some(2));
        let a = gauge.try_acquire().unwrap();
        let _b = gauge.try_acquire().unwrap();
        assert!(gauge.try_acquire().is_none());
        drop(a);
        assert!(gauge.try_acquire().is_some());
    }

    #[tokio::test]
    async fn acquire_waits_for_a_freed_place_or_a_raised_limit() {
        let gauge = Gauge::new(Some(1));
        let held = gauge.acquire().await;
        let waiting = tokio::spawn({
            let gauge = Arc::clone(&gauge);
            async move { gauge.acquire().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(held);
        let second = waiting.await.unwrap();
        let third = tokio::spawn({
            let gauge = Arc::clone(&gauge);
            async move { gauge.acquire().await }
        });
        tokio::task::yield_now().await;
        gauge.set_limit(Some(2));
        let _third = third.await.unwrap();
        assert_eq!(gauge.open(), 2);
        drop(second);
    }

    #[test]
    fn per_client_counts_each_address() {
        let per = PerClient::new(Some(1));
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let held = per.try_acquire(one).unwrap();
        assert!(per.try_acquire(one).is_none());
        assert!(
            per.try_acquire("::ffff:10.0.0.1".parse().unwrap())
                .is_none(),
            "mapped is the same client"
        );
        assert!(per.try_acquire("10.0.0.2".parse().unwrap()).is_some());
        drop(held);
        assert!(per.try_acquire(one).is_some());
        assert!(
            PerClient::new(None).try_acquire(one).unwrap().is_none(),
            "no limit, nothing counted"
        );
    }

    #[test]
    fn per_client_counts_survive_a_new_limit() {
        let per = PerClient::new(Some(2));
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let _held = [per.try_acquire(one).unwrap(), per.try_acquire(one).unwrap()];
        per.set_limit(Some(2));
        assert!(
            per.try_acquire(one).is_none(),
            "the held places still count"
        );
        per.set_limit(Some(3));
        assert!(per.try_acquire(one).unwrap().is_some());
        per.set_limit(None);
        assert!(per.try_acquire(one).unwrap().is_none(), "no limit");
    }
}
