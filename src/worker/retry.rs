//! Retry policy: exponential backoff with full jitter, honouring the upstream's `Retry-After`.
//!
//! Full jitter as described in "Exponential Backoff And Jitter" (AWS Architecture Blog, 2015):
//! the delay before attempt `n + 1` is uniform in `0..=min(cap, base * 2^(n-1))`.

use std::time::Duration;

use rand::Rng;

/// Delay before the next attempt after attempt `attempt` (1-based) failed. A `retry_after`
/// hint from the upstream is a floor, itself capped at `cap`: an upstream asking for a day
/// (or for 10^13 seconds) does not park the job for that long.
pub fn backoff(
    attempt: u32,
    base: Duration,
    cap: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let ceiling = exp.min(cap);
    let jittered = Duration::from_millis(
        rand::rng().random_range(0..=u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX)),
    );
    match retry_after {
        Some(hint) => jittered.max(hint.min(cap)),
        None => jittered,
    }
}

/// When a retry `delay` from `now` is due: checked arithmetic, so no delay can panic (a
/// panicking attempt would leave its job running); past what a date can hold, the latest
/// date.
pub fn retry_time(
    now: chrono::DateTime<chrono::Utc>,
    delay: Duration,
) -> chrono::DateTime<chrono::Utc> {
    chrono::Duration::from_std(delay)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_under_the_growing_ceiling_and_the_cap() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_millis(1000));
        for _ in 0..200 {
            assert!(backoff(1, base, cap, None) <= Duration::from_millis(100));
            assert!(backoff(3, base, cap, None) <= Duration::from_millis(400));
            assert!(backoff(30, base, cap, None) <= cap);
        }
    }

    #[test]
    fn retry_after_is_a_floor() {
        let d = backoff(
            1,
            Duration::from_millis(10),
            Duration::from_secs(10),
            Some(Duration::from_secs(3)),
        );
        assert_eq!(d, Duration::from_secs(3));
    }

    #[test]
    fn retry_after_is_capped_like_the_backoff() {
        let (base, cap) = (Duration::from_millis(10), Duration::from_secs(60));
        for hint in [86_400, 10_000_000_000_000, u64::MAX] {
            let d = backoff(1, base, cap, Some(Duration::from_secs(hint)));
            assert_eq!(d, cap, "Retry-After: {hint}");
        }
    }

    #[test]
    fn retry_time_never_overflows() {
        let now = chrono::Utc::now();
        assert!(retry_time(now, Duration::from_secs(u64::MAX)) > now);
        assert_eq!(
            retry_time(now, Duration::from_secs(3)),
            now + chrono::Duration::seconds(3)
        );
    }
}
