//! The fleet's upstream budget: per model, requests per minute and tokens per minute (input
//! estimate plus `max_tokens`, the way OpenAI meters), kept in Redis and taken by every worker
//! before each upstream call, so the fleet waits its turn instead of collecting 429s. A 429
//! halves the model's budget until its `Retry-After` (or 30 s) has passed.
//!
//! Redis keys (prefix `P`): `P:ub:<model>:req:<minute>`, `P:ub:<model>:tok:<minute>`
//! (counters), `P:ub:<model>:penalty` (present while the budget is halved). Without Redis the
//! same counters live in process ([`super::memory`]): one process, one budget.

use std::{collections::HashMap, sync::LazyLock, time::Duration};

use rand::Rng;
use redis::Script;
use tokio_util::sync::CancellationToken;

use super::{Backend, memory::Window};

static BUDGET: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("budget.lua")));

/// How long a 429 without `Retry-After` halves the budget.
const DEFAULT_PENALTY: Duration = Duration::from_secs(30);
/// Longest single wait before the budget is asked again (so a shrunk or freed budget and a
/// cancel are noticed).
const MAX_WAIT: Duration = Duration::from_secs(2);
/// Output tokens assumed for a job without `max_tokens`.
pub const DEFAULT_OUTPUT_TOKENS: u64 = 1000;

/// Requests and tokens per minute of one model; 0 means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests per minute.
    pub requests_per_minute: u64,
    /// Tokens per minute (input estimate plus output allowance).
    pub tokens_per_minute: u64,
}

impl Limits {
    /// `RPM:TPM`, e.g. `500:200000` (either may be 0: unlimited).
    ///
    /// Errors: a message naming what is wrong.
    pub fn parse(s: &str) -> Result<Limits, String> {
        let (r, t) = s
            .split_once(':')
            .ok_or_else(|| format!("expected RPM:TPM, got {s:?}"))?;
        let n = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("expected RPM:TPM numbers, got {s:?}"))
        };
        Ok(Limits {
            requests_per_minute: n(r)?,
            tokens_per_minute: n(t)?,
        })
    }

    fn unlimited(self) -> bool {
        self.requests_per_minute == 0 && self.tokens_per_minute == 0
    }
}

/// A model's `model=RPM:TPM` override, as given on the command line.
///
/// Errors: a message naming what is wrong.
pub fn parse_model_limits(s: &str) -> Result<(String, Limits), String> {
    let (model, limits) = s
        .split_once('=')
        .ok_or_else(|| format!("expected MODEL=RPM:TPM, got {s:?}"))?;
    Ok((model.trim().to_owned(), Limits::parse(limits)?))
}

/// The shared budget.
#[derive(Clone)]
pub struct Budget {
    backend: Backend,
    prefix: String,
    window: Duration,
    default: Limits,
    models: HashMap<String, Limits>,
}

/// Why [`Budget::acquire`] returned without taking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped;

impl Budget {
    /// A budget in `backend` under `prefix`: `default` for every model, `models` overriding
    /// it; the limits hold per `window` (a minute, except in tests).
    pub fn new(
        backend: Backend,
        prefix: &str,
        default: Limits,
        models: HashMap<String, Limits>,
        window: Duration,
    ) -> Budget {
        Budget {
            backend,
            prefix: prefix.to_owned(),
            window: window.max(Duration::from_millis(100)),
            default,
            models,
        }
    }

    fn limits(&self, model: &str) -> Limits {
        self.models.get(model).copied().unwrap_or(self.default)
    }

    /// The tokens one call is metered at: the prompt at about 4 bytes a token plus the output
    /// allowance (`max_tokens`, else [`DEFAULT_OUTPUT_TOKENS`]).
    pub fn cost(prompt_bytes: usize, max_tokens: Option<u32>) -> u64 {
        (prompt_bytes as u64).div_ceil(4) + max_tokens.map_or(DEFAULT_OUTPUT_TOKENS, u64::from)
    }

    /// Waits until `model`'s budget has room for one request of `tokens`, then takes it.
    /// A Redis failure lets the call through (logged): the upstream's own limit still holds.
    ///
    /// Errors: [`Stopped`] when `stop` is cancelled while waiting.
    pub async fn acquire(
        &self,
        model: &str,
        tokens: u64,
        stop: &CancellationToken,
    ) -> Result<(), Stopped> {
        let mut limits = self.limits(model);
        if limits.unlimited() {
            return Ok(());
        }
        if limits.tokens_per_minute > 0 {
            // A call bigger than a whole minute's tokens could never run: let it use all.
            limits.tokens_per_minute = limits.tokens_per_minute.max(tokens);
        }
        loop {
            let wait = match self.try_take(model, limits, tokens).await {
                Ok(None) => return Ok(()),
                Ok(Some(wait)) => wait,
                Err(e) => {
                    tracing::warn!(error = %e, model, "upstream budget not checked: Redis failed");
                    return Ok(());
                }
            };
            // Jitter, so waiting workers do not all ask again at the same instant.
            let jitter = Duration::from_millis(rand::rng().random_range(0..50));
            tokio::select! {
                _ = stop.cancelled() => return Err(Stopped),
                _ = tokio::time::sleep(wait.min(MAX_WAIT) + jitter) => {}
            }
        }
    }

    /// Takes the budget, or says how long to wait.
    async fn try_take(
        &self,
        model: &str,
        limits: Limits,
        tokens: u64,
    ) -> Result<Option<Duration>, String> {
        let base = format!("{}:ub:{model}", self.prefix);
        let now_ms = chrono::Utc::now().timestamp_millis();
        let (rpm, tpm) = if self.penalized(&base, now_ms).await? {
            (
                limits.requests_per_minute.div_ceil(2),
                limits
                    .tokens_per_minute
                    .div_ceil(2)
                    .max(tokens.min(limits.tokens_per_minute)),
            )
        } else {
            (limits.requests_per_minute, limits.tokens_per_minute)
        };
        let window = u64::try_from(self.window.as_millis()).unwrap_or(60_000);
        let now = u64::try_from(now_ms).unwrap_or(0);
        let (index, elapsed) = (now / window, now % window);
        let prev = index.saturating_sub(1);
        let keys = [
            format!("{base}:req:{prev}"),
            format!("{base}:req:{index}"),
            format!("{base}:tok:{prev}"),
            format!("{base}:tok:{index}"),
        ];
        let (taken, [rp, rc, tp, tc]) = match &self.backend {
            Backend::Redis(redis) => {
                let mut conn = redis.conn().await.map_err(|e| e.to_string())?;
                let (taken, rp, rc, tp, tc): (u8, u64, u64, u64, u64) = BUDGET
                    .key(&keys[0])
                    .key(&keys[1])
                    .key(&keys[2])
                    .key(&keys[3])
                    .arg(elapsed)
                    .arg(window)
                    .arg(rpm)
                    .arg(tpm)
                    .arg(tokens)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                (taken == 1, [rp, rc, tp, tc])
            }
            Backend::Memory(counters) => {
                let window_of = |prev: usize| Window {
                    prev: &keys[prev],
                    cur: &keys[prev + 1],
                    elapsed,
                    length: window,
                    now: now_ms,
                };
                counters.take_both((&window_of(0), rpm), (&window_of(2), tpm, tokens))
            }
        };
        if taken {
            return Ok(None);
        }
        let wait_for = |limit: u64, amount: u64, p: u64, c: u64| {
            if limit == 0 || super::fits(limit, amount, p, c, elapsed, window) {
                Duration::ZERO
            } else {
                super::retry_after(limit, amount, p, c, elapsed, window)
            }
        };
        Ok(Some(
            wait_for(rpm, 1, rp, rc)
                .max(wait_for(tpm, tokens, tp, tc))
                .max(Duration::from_millis(1)),
        ))
    }

    /// Whether the budget at `base` is halved now (`now_ms`) after an upstream 429.
    async fn penalized(&self, base: &str, now_ms: i64) -> Result<bool, String> {
        Ok(match &self.backend {
            Backend::Redis(redis) => {
                let mut conn = redis.conn().await.map_err(|e| e.to_string())?;
                redis::cmd("EXISTS")
                    .arg(format!("{base}:penalty"))
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?
            }
            Backend::Memory(counters) => counters.flagged(&format!("{base}:penalty"), now_ms),
        })
    }

    /// The upstream answered 429 for `model`: halve its budget for `retry_after` (or 30 s).
    pub async fn penalize(&self, model: &str, retry_after: Option<Duration>) {
        let ms = u64::try_from(retry_after.unwrap_or(DEFAULT_PENALTY).as_millis())
            .unwrap_or(u64::MAX)
            .max(1000);
        let key = format!("{}:ub:{model}:penalty", self.prefix);
        let result = async {
            let redis = match &self.backend {
                Backend::Redis(redis) => redis,
                Backend::Memory(counters) => {
                    let until = chrono::Utc::now().timestamp_millis()
                        + i64::try_from(ms).unwrap_or(i64::MAX / 2);
                    counters.flag(&key, until);
                    return Ok(());
                }
            };
            let mut conn = redis.conn().await.map_err(|e| e.to_string())?;
            redis::cmd("SET")
                .arg(&key)
                .arg(1)
                .arg("PX")
                .arg(ms)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        match result {
            Ok(()) => tracing::warn!(model, penalty_ms = ms, "upstream 429: budget halved"),
            Err(e) => tracing::warn!(error = %e, model, "cannot record the upstream 429"),
        }
    }
}

#[cfg(test)]
mod tests;
