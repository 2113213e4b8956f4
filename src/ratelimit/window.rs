//! The sliding window every rate limit counts in: a window's count plus the previous
//! window's, weighted by how much of it still overlaps (see `window.lua`).

use std::{sync::LazyLock, time::Duration};

use redis::Script;

use super::{Backend, memory};

static WINDOW: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("window.lua")));

/// What a sliding-window take found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    /// The amount was taken.
    Yes,
    /// It does not fit now; it may after this long.
    RetryAfter(Duration),
}

/// Whether `amount` more fits under `limit` with `prev` in the previous window (weighted by
/// its overlap with the last window length) and `cur` in the current one, `elapsed` ms into a
/// window of `window` ms: the rule of `window.lua` and `budget.lua`.
pub(crate) fn fits(
    limit: u64,
    amount: u64,
    prev: u64,
    cur: u64,
    elapsed: u64,
    window: u64,
) -> bool {
    let weight = window.saturating_sub(elapsed) as f64 / window.max(1) as f64;
    prev as f64 * weight + (cur + amount) as f64 <= limit as f64
}

/// Takes `amount` from the sliding window at `key` that allows `limit` per `window`.
///
/// Errors: Redis's (never for [`Backend::Memory`]).
pub async fn take(
    backend: &Backend,
    key: &str,
    limit: u64,
    amount: u64,
    window: Duration,
) -> Result<Taken, redis::RedisError> {
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
    let now_ms = chrono::Utc::now().timestamp_millis();
    let now = u64::try_from(now_ms).unwrap_or(0);
    let (index, elapsed) = (now / window_ms, now % window_ms);
    let prev_key = format!("{key}:{}", index.saturating_sub(1));
    let cur_key = format!("{key}:{index}");
    let (taken, prev, cur) = match backend {
        Backend::Redis(redis) => {
            let mut conn = redis.conn().await.map_err(|e| {
                redis::RedisError::from((redis::ErrorKind::Io, "pool", e.to_string()))
            })?;
            let (taken, prev, cur): (u8, u64, u64) = WINDOW
                .key(prev_key)
                .key(cur_key)
                .arg(limit)
                .arg(elapsed)
                .arg(window_ms)
                .arg(amount)
                .invoke_async(&mut conn)
                .await?;
            (taken == 1, prev, cur)
        }
        Backend::Memory(counters) => counters.take(
            &memory::Window {
                prev: &prev_key,
                cur: &cur_key,
                elapsed,
                length: window_ms,
                now: now_ms,
            },
            limit,
            amount,
        ),
    };
    if taken {
        return Ok(Taken::Yes);
    }
    Ok(Taken::RetryAfter(retry_after(
        limit, amount, prev, cur, elapsed, window_ms,
    )))
}

/// How long until `amount` fits: the current window must end when it alone is too full;
/// otherwise the previous window's weight must fall far enough.
pub(crate) fn retry_after(
    limit: u64,
    amount: u64,
    prev: u64,
    cur: u64,
    elapsed: u64,
    window: u64,
) -> Duration {
    let to_end = window - elapsed;
    if cur + amount > limit || prev == 0 {
        return Duration::from_millis(to_end.max(1));
    }
    // prev * (window - t) / window + cur + amount <= limit  ⇔  t >= window * (1 - room / prev)
    let room = (limit - cur - amount) as f64;
    let t = window as f64 * (1.0 - room / prev as f64);
    let wait = (t.ceil() as u64)
        .saturating_sub(elapsed)
        .clamp(1, to_end.max(1));
    Duration::from_millis(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_weighs_the_previous_count_by_its_overlap() {
        // 30 s into the minute, half of the previous minute's 10 still count.
        assert!(fits(10, 1, 10, 4, 30_000, 60_000));
        assert!(!fits(10, 1, 10, 5, 30_000, 60_000));
        assert!(!fits(10, 10, 10, 0, 59_999, 60_000));
        assert!(fits(10, 10, 0, 0, 0, 60_000));
    }

    #[test]
    fn retry_waits_for_the_window_or_for_the_previous_one_to_fade() {
        // The current minute alone is full: wait for it to end.
        assert_eq!(
            retry_after(10, 1, 0, 10, 15_000, 60_000),
            Duration::from_millis(45_000)
        );
        // Half the previous minute's 10 still count at 30 s; 5 + 5 + 1 > 10 until t = 36 s.
        assert_eq!(
            retry_after(10, 1, 10, 5, 30_000, 60_000),
            Duration::from_millis(6_000)
        );
    }
}
