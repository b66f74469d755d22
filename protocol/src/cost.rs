//! What model tokens cost: a model's price, and amounts of US dollars.
//!
//! Amounts are whole millionths of a US dollar (micro-dollars), so sums are exact and views
//! compare equal whether built live or from the log. A price is per million tokens, so an
//! attempt's cost in micro-dollars is its tokens times the price (rounded once, per attempt).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::outcome::Usage;

/// One model's price, in US dollars per million tokens.
///
/// ```toml
/// [prices."gpt-4o-mini"]
/// input = 0.15
/// cached_input = 0.075
/// output = 0.6
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Input (prompt) tokens.
    pub input: f64,
    /// Input tokens the provider served from its prompt cache; unset: priced as `input`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    /// Output (generated) tokens.
    pub output: f64,
}

impl Price {
    /// Why this price cannot be used (a negative or non-finite figure), if it cannot.
    pub fn check(&self) -> Result<(), String> {
        let figures = [
            ("input", Some(self.input)),
            ("cached_input", self.cached_input),
            ("output", Some(self.output)),
        ];
        for (field, figure) in figures {
            if let Some(figure) = figure
                && !(figure.is_finite() && figure >= 0.0)
            {
                return Err(format!(
                    "`{field}` must be a non-negative number of US dollars per million tokens, not {figure}"
                ));
            }
        }
        Ok(())
    }

    /// What `usage` costs at this price, in micro-dollars: input tokens (the cached ones at
    /// `cached_input`) plus output tokens, each count times its price per million tokens.
    pub fn cost_usd_micros(&self, usage: &Usage) -> u64 {
        let cached = usage.cached_input_tokens.min(usage.input_tokens);
        let fresh = usage.input_tokens - cached;
        let micros = fresh as f64 * self.input
            + cached as f64 * self.cached_input.unwrap_or(self.input)
            + usage.output_tokens as f64 * self.output;
        // A checked price is finite and non-negative, so the product is too; `as` saturates.
        micros.round() as u64
    }
}

/// An amount of US dollars, held in micro-dollars and written as a number of dollars
/// (`0.25`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Usd(pub u64);

impl Usd {
    /// The amount in micro-dollars.
    pub fn micros(self) -> u64 {
        self.0
    }

    /// The amount in dollars.
    pub fn dollars(self) -> f64 {
        self.0 as f64 / 1e6
    }
}

impl fmt::Display for Usd {
    /// Dollars with six decimals, e.g. `$0.000450`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.dollars())
    }
}

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let dollars = f64::deserialize(deserializer)?;
        if !(dollars.is_finite() && dollars >= 0.0) {
            return Err(serde::de::Error::custom(format!(
                "an amount of US dollars must be a non-negative number, not {dollars}"
            )));
        }
        Ok(Self((dollars * 1e6).round() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cost_is_tokens_times_the_price_per_million() {
        let price = Price {
            input: 0.15,
            cached_input: Some(0.075),
            output: 0.6,
        };
        let usage = Usage {
            input_tokens: 1_000,
            cached_input_tokens: 200,
            output_tokens: 500,
            cost_usd_micros: None,
        };
        // 800 × 0.15 + 200 × 0.075 + 500 × 0.6 = 120 + 15 + 300.
        assert_eq!(price.cost_usd_micros(&usage), 435);
        let uncached = Price {
            cached_input: None,
            ..price
        };
        assert_eq!(uncached.cost_usd_micros(&usage), 450);
        assert!(
            Price {
                input: -1.0,
                ..price
            }
            .check()
            .is_err()
        );
        assert!(price.check().is_ok());
    }

    #[test]
    fn dollars_read_and_write_as_numbers() {
        let usd: Usd = serde_json::from_str("0.25").unwrap_or_default();
        assert_eq!(usd, Usd(250_000));
        assert_eq!(serde_json::to_string(&usd).unwrap_or_default(), "0.25");
        assert_eq!(usd.to_string(), "$0.250000");
        assert!(serde_json::from_str::<Usd>("-1").is_err());
    }
}
