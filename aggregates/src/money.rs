//! Money: exact decimals as integer micro-units (6 decimals), never floating point.

use std::fmt;

/// Micro-units per unit.
pub const MICROS: i64 = 1_000_000;

/// A price per result in USD, 0..=1,000,000 with at most 6 decimals.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Price(i64);

/// Why a price was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    /// Not `^\d+(\.\d{1,6})?$` (422).
    #[error("must be a non-negative decimal with at most 6 decimals")]
    Malformed,
    /// Above 1,000,000 (422).
    #[error("must be at most 1000000")]
    TooLarge,
}

impl Price {
    /// The largest price.
    pub const MAX: Price = Price(1_000_000 * MICROS);

    /// Parses `^\d+(\.\d{1,6})?$`, at most 1,000,000. The text form of a JSON number is accepted
    /// as long as it has that shape (no sign, no exponent).
    pub fn parse(raw: &str) -> Result<Self, PriceError> {
        let (whole, fraction) = match raw.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (raw, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || fraction.is_some_and(|f| !digits(f) || f.len() > 6) {
            return Err(PriceError::Malformed);
        }
        let whole = whole.trim_start_matches('0');
        if whole.len() > 7 {
            return Err(PriceError::TooLarge);
        }
        let units: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| PriceError::Malformed)?
        };
        let fraction = fraction.unwrap_or("");
        let micros: i64 = format!("{fraction:0<6}")
            .parse()
            .map_err(|_| PriceError::Malformed)?;
        let price = Price(units * MICROS + micros);
        if price > Self::MAX {
            return Err(PriceError::TooLarge);
        }
        Ok(price)
    }

    /// A price from micro-units.
    pub fn from_micros(micros: i64) -> Self {
        Price(micros)
    }

    /// The price in micro-units.
    pub fn micros(self) -> i64 {
        self.0
    }
}

/// Formats micro-units in plain notation with trailing zeros dropped (`0.05`, `12`, `0.000001`).
pub fn format_micros(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let (units, fraction) = (abs / MICROS as u64, abs % MICROS as u64);
    if fraction == 0 {
        format!("{sign}{units}")
    } else {
        let fraction = format!("{fraction:06}");
        format!("{sign}{units}.{}", fraction.trim_end_matches('0'))
    }
}

/// Micro-units as a JSON number (parsed from its exact decimal text, so it prints as written).
pub fn json_number(micros: i64) -> serde_json::Value {
    serde_json::from_str(&format_micros(micros)).unwrap_or(serde_json::Value::Null)
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_micros(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn prices_parse_exactly() {
        assert_eq!(Price::parse("0.05").unwrap().micros(), 50_000);
        assert_eq!(Price::parse("1000000").unwrap(), Price::MAX);
        assert_eq!(Price::parse("0.000001").unwrap().micros(), 1);
        assert_eq!(Price::parse("007.5").unwrap().micros(), 7_500_000);
        for bad in ["", ".5", "5.", "-1", "1e3", "0.0000001", " 1", "1,5", "abc"] {
            assert_eq!(Price::parse(bad), Err(PriceError::Malformed), "{bad}");
        }
        assert_eq!(Price::parse("1000000.000001"), Err(PriceError::TooLarge));
        assert_eq!(
            Price::parse("99999999999999999999"),
            Err(PriceError::TooLarge)
        );
    }

    #[test]
    fn amounts_print_in_plain_notation() {
        assert_eq!(format_micros(50_000), "0.05");
        assert_eq!(format_micros(2 * MICROS), "2");
        assert_eq!(format_micros(1), "0.000001");
        assert_eq!(json_number(50_000).to_string(), "0.05");
    }

    proptest! {
        #[test]
        fn formatting_round_trips(micros in 0i64..=1_000_000 * MICROS) {
            let price = Price::from_micros(micros);
            prop_assert_eq!(Price::parse(&price.to_string()).unwrap(), price);
        }

        #[test]
        fn parsing_never_panics(raw in "\\PC{0,30}") {
            let _ = Price::parse(&raw);
        }
    }
}
