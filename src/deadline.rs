//! Deadlines that cannot overflow. A wait too long for the clock to represent (a library
//! caller may pass `Duration::MAX`) means "not in this process's lifetime", never a panic.

use std::time::Duration;

use tokio::time::Instant;

/// About thirty years: what a wait too long to represent becomes (tokio's own "never").
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `start + wait`, or a far-future instant when that sum does not fit in an [`Instant`].
pub fn after(start: Instant, wait: Duration) -> Instant {
    start
        .checked_add(wait)
        .or_else(|| start.checked_add(FAR_FUTURE))
        .unwrap_or(start)
}

/// `wait` from now (see [`after`]).
pub fn from_now(wait: Duration) -> Instant {
    after(Instant::now(), wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_too_long_to_represent_is_far_away_not_a_panic() {
        let now = Instant::now();
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        let never = after(now, Duration::MAX);
        assert!(never >= now + Duration::from_secs(86_400 * 365));
        assert!(from_now(Duration::MAX) > now);
    }
}
