//! Token prices per model, for the cost of a result in USD.
//!
//! Defaults: OpenAI's published prices per million tokens (openai.com/api/pricing, standard
//! tier, 2025). A JSON file given with `LLMJOBS_PRICING_FILE` replaces or adds entries:
//! `{"my-model": {"input_per_million": 0.5, "output_per_million": 1.5}}`. A model is priced by
//! the longest entry it equals or starts with followed by `-` (dated snapshots such as
//! `gpt-4o-mini-2024-07-18` use `gpt-4o-mini`); an unknown model has no cost, not a zero cost.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::job::Usage;

/// Price of one model (USD per million tokens).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
pub struct Price {
    /// Input (prompt) tokens.
    pub input_per_million: f64,
    /// Output (completion) tokens.
    pub output_per_million: f64,
}

const DEFAULTS: &[(&str, f64, f64)] = &[
    ("gpt-4o", 2.50, 10.00),
    ("gpt-4o-mini", 0.15, 0.60),
    ("gpt-4.1", 2.00, 8.00),
    ("gpt-4.1-mini", 0.40, 1.60),
    ("gpt-4.1-nano", 0.10, 0.40),
    ("o3-mini", 1.10, 4.40),
    ("o4-mini", 1.10, 4.40),
    ("gpt-3.5-turbo", 0.50, 1.50),
];

/// The pricing table.
#[derive(Clone, Debug)]
pub struct Pricing {
    prices: BTreeMap<String, Price>,
}

impl Default for Pricing {
    fn default() -> Self {
        Pricing {
            prices: DEFAULTS
                .iter()
                .map(|(m, i, o)| {
                    (
                        (*m).to_owned(),
                        Price {
                            input_per_million: *i,
                            output_per_million: *o,
                        },
                    )
                })
                .collect(),
        }
    }
}

impl Pricing {
    /// The defaults, overridden by the JSON file at `path` when given.
    ///
    /// Errors: a message when the file cannot be read or parsed.
    pub fn load(path: Option<&std::path::Path>) -> Result<Pricing, String> {
        let mut pricing = Pricing::default();
        if let Some(path) = path {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read pricing file {}: {e}", path.display()))?;
            let extra: BTreeMap<String, Price> = serde_json::from_str(&text)
                .map_err(|e| format!("invalid pricing file {}: {e}", path.display()))?;
            pricing.prices.extend(extra);
        }
        Ok(pricing)
    }

    /// The price of `model`, if known.
    pub fn price(&self, model: &str) -> Option<Price> {
        self.prices
            .iter()
            .filter(|(name, _)| {
                model == name.as_str()
                    || model
                        .strip_prefix(name.as_str())
                        .is_some_and(|rest| rest.starts_with('-'))
            })
            .max_by_key(|(name, _)| name.len())
            .map(|(_, p)| *p)
    }

    /// Cost in USD of `usage` on `model`; `None` for an unknown model or estimated usage.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        if usage.estimated {
            return None;
        }
        let p = self.price(model)?;
        Some(
            usage.input_tokens as f64 * p.input_per_million / 1e6
                + usage.output_tokens as f64 * p.output_per_million / 1e6,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: input + output,
            ..Usage::default()
        }
    }

    #[test]
    fn dated_snapshots_use_the_longest_matching_price() {
        let p = Pricing::default();
        let cost = p
            .cost("gpt-4o-mini-2024-07-18", &usage(19, 11))
            .expect("known");
        assert!((cost - (19.0 * 0.15 + 11.0 * 0.60) / 1e6).abs() < 1e-15);
        assert_eq!(
            p.price("gpt-4o-2024-08-06").map(|x| x.input_per_million),
            Some(2.50)
        );
        assert_eq!(p.price("gpt-4omni"), None, "a prefix must end at a dash");
        assert_eq!(
            p.cost("llama3", &usage(1, 1)),
            None,
            "unknown: no cost, not zero"
        );
        let estimated = Usage {
            estimated: true,
            ..usage(0, 5)
        };
        assert_eq!(p.cost("gpt-4o", &estimated), None);
    }
}
