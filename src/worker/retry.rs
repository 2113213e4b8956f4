//! Retry policy: exponential backoff with full jitter, honouring the upstream's `Retry-After`.
//!
//! Full jitter as described in "Exponential Backoff And Jitter" (AWS Architecture Blog, 2015):
//! the delay before attempt `n + 1` is uniform in `0..=min(cap, base * 2^(n-1))`.

use std::time::Duration;

use rand::Rng;

/// Delay before the next attempt after attempt `attempt` (1-based) failed. A `retry_after`
/// hint from the upstream is a floor.
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
        Some(hint) => jittered.max(hint),
        None => jittered,
    }
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
            Duration::from_millis(20),
            Some(Duration::from_secs(3)),
        );
        assert_eq!(d, Duration::from_secs(3));
    }
}
