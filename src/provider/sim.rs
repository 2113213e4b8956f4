//! The simulated provider: deterministic text for a prompt, at a configured time to first
//! token and token rate. Used for models `sim` and `sim-*`; results are marked simulated.

use std::{
    hash::{Hash, Hasher},
    time::Duration,
};

use async_trait::async_trait;
use futures::StreamExt;
use rand::{Rng, SeedableRng, rngs::StdRng};

use super::{Chunk, ChunkStream, Error, Provider, Request};
use crate::job::Usage;

const WORDS: &[&str] = &[
    "the",
    "queue",
    "worker",
    "token",
    "stream",
    "job",
    "result",
    "priority",
    "lease",
    "retry",
    "event",
    "sequence",
    "model",
    "prompt",
    "latency",
    "throughput",
    "balance",
    "reliable",
    "simulated",
    "answer",
    "carefully",
    "quickly",
    "each",
    "every",
    "waits",
    "runs",
    "returns",
    "a",
    "of",
    "and",
    "in",
    "its",
    "turn",
    "line",
    "work",
    "order",
    "state",
    "store",
];

/// The simulated provider.
pub struct Sim {
    first_token: Duration,
    interval: Duration,
}

impl Sim {
    /// A simulator whose first token comes after `first_token`, the next ones at
    /// `tokens_per_second` (40 when that is not a positive number).
    pub fn new(first_token: Duration, tokens_per_second: f64) -> Sim {
        let rate = if tokens_per_second.is_finite() && tokens_per_second > 0.0 {
            tokens_per_second
        } else {
            40.0
        };
        Sim {
            first_token,
            interval: Duration::from_secs_f64(1.0 / rate),
        }
    }
}

/// The words the simulator answers `request` with, and whether `max_tokens` cut them.
pub fn answer(request: &Request) -> (Vec<String>, bool) {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for m in &request.messages {
        m.role.hash(&mut hasher);
        m.content.hash(&mut hasher);
    }
    request.params.model.hash(&mut hasher);
    request.params.seed.hash(&mut hasher);
    let mut rng = StdRng::seed_from_u64(hasher.finish());
    let natural = rng.random_range(24..64usize);
    let limit = request
        .params
        .max_tokens
        .map_or(natural, |m| usize::try_from(m).unwrap_or(usize::MAX));
    let n = natural.min(limit);
    let json = request.params.response_format.is_some();
    let mut words: Vec<String> = (0..n)
        .map(|i| {
            let w = WORDS[rng.random_range(0..WORDS.len())];
            match (i, json) {
                // A JSON response format gets a JSON object: {"simulated": true, "text": "…"}.
                (0, true) => format!("{{\"simulated\": true, \"text\": \"{w}"),
                (0, false) => format!("Simulated: {w}"),
                _ => format!(" {w}"),
            }
        })
        .collect();
    if json && !words.is_empty() && limit >= natural {
        words.push("\"}".to_owned());
    }
    (words, limit < natural)
}

#[async_trait]
impl Provider for Sim {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn simulated(&self) -> bool {
        true
    }

    async fn stream(&self, request: &Request) -> Result<ChunkStream, Error> {
        let (words, cut) = answer(request);
        let input_tokens: u64 = request
            .messages
            .iter()
            .map(|m| m.content.split_whitespace().count() as u64)
            .sum();
        let output_tokens = words.len() as u64;
        let model = request.params.model.clone();
        let (first, interval) = (self.first_token, self.interval);
        let last = Chunk {
            finish_reason: Some(if cut { "length" } else { "stop" }.to_owned()),
            usage: Some(Usage {
                input_tokens,
                output_tokens,
                total_tokens: input_tokens + output_tokens,
                estimated: false,
                cached_input_tokens: None,
                reasoning_tokens: None,
            }),
            model: Some(model.clone()),
            ..Chunk::default()
        };
        let chunks = words.into_iter().map(move |content| Chunk {
            content,
            model: Some(model.clone()),
            ..Chunk::default()
        });
        let stream = futures::stream::iter(chunks.chain(std::iter::once(last)))
            .enumerate()
            .then(move |(i, chunk)| async move {
                tokio::time::sleep(if i == 0 { first } else { interval }).await;
                Ok(chunk)
            });
        Ok(stream.boxed())
    }
}

#[cfg(test)]
mod tests;
