//! Money: exact decimals as integer micro-units (6 decimals), never floating point.
//!
//! Arithmetic only ever sees micro-units (`i64`). Floating point appears at exactly one place: a
//! [`Price`] is serialized as a JSON number by converting its micro-units to `f64`. That is exact
//! enough to be lossless: every price is at most 1,000,000 with 6 decimals (≤ 13 significant
//! digits, well inside the 15.9 of an `f64`), so the shortest decimal that round-trips — the one
//! serde_json prints — is the price itself, and reading it back rounds to the same micro-units.
//! (serde_json prints values below 0.00001 in exponent form, e.g. `1e-6`; still the same number.)

use std::fmt;

/// Micro-units per unit.
pub const MICROS: i64 = 1_000_000;

/// A price per result in USD, 0..=1,000,000 with at most 6 decimals. Serialized as a JSON number
/// in units (`0.05`), read back from a number or a decimal string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
        Amount::parse(raw, Self::MAX.0)
            .map(|a| Price(a.0))
            .map_err(PriceError::from)
    }

    /// A price from a JSON number, e.g. the `price_per_result` of a request body.
    ///
    /// Without serde_json's `arbitrary_precision` the number's original text is gone; its
    /// `to_string` is the shortest form of the parsed value, which uses exponent notation below
    /// 0.00001 (`0.000001` reads back as `1e-6`). That text is expanded to plain notation before
    /// the strict [`Price::parse`] rules apply, so signs and more than 6 decimals are still
    /// refused. A literal exponent in the request (`1e-6`) is indistinguishable and accepted.
    pub fn from_json_number(number: &serde_json::Number) -> Result<Self, PriceError> {
        let text = number.to_string();
        match plain_notation(&text) {
            Some(plain) => Self::parse(&plain),
            None => Self::parse(&text),
        }
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

/// The largest single charge, in micro-USD: a download at the highest price (`P × 10`, SPEC
/// §5.4). Commands refuse a charge above it, so every recorded charge lies in
/// `0..=MAX_CHARGE_MICROS` (below 2^44) and its fee basis `amount × bps` below 2^58.
pub const MAX_CHARGE_MICROS: i64 = Price::MAX.0 * 10;

/// Bits per limb of a [`Limbs`] sum.
pub const LIMB_BITS: u32 = 21;

/// A limb's base, 2^21.
pub const LIMB: i64 = 1 << LIMB_BITS;

/// An exact sum of non-negative 63-bit terms (amounts, fee bases) in the form SQL keeps it:
/// three sums of 21-bit limbs, most significant first, worth `l2 · 2^42 + l1 · 2^21 + l0`.
///
/// Both stores have 64-bit integers only where `sqlx::Any` can read them: SQLite's `SUM` fails on
/// overflow and keeps no wider type, and PostgreSQL's `SUM(bigint)` is a `numeric` that the Any
/// driver cannot decode. A 64-bit sum of charges is no good: at the highest price the fee basis
/// of one download is 2 · 10^16 (at 20 %), and 462 of them pass 2^63. Splitting every term into
/// limbs below 2^21 keeps each limb sum below 2^63 for up to 2^42 terms, more rows than either
/// store can hold (2^42 rows of 100 bytes are 400 TiB; a SQLite file holds at most 256 TiB, a
/// PostgreSQL table 32 TiB). So one SQL text serves both stores, the columns stay `BIGINT`, a
/// statement is still one upsert per charge, and Rust joins the limbs into an `i128`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limbs(pub [i64; 3]);

impl Limbs {
    /// The limbs of one term; `None` unless `0 <= value < 2^63`.
    pub fn of(value: i128) -> Option<Self> {
        let value = i64::try_from(value).ok().filter(|v| *v >= 0)?;
        Some(Limbs([
            value >> (2 * LIMB_BITS),
            (value >> LIMB_BITS) & (LIMB - 1),
            value & (LIMB - 1),
        ]))
    }

    /// The limb-wise sum, as SQL adds each limb in 64 bits; `None` where that would overflow.
    pub fn checked_add(self, other: Limbs) -> Option<Limbs> {
        let [a2, a1, a0] = self.0;
        let [b2, b1, b0] = other.0;
        Some(Limbs([
            a2.checked_add(b2)?,
            a1.checked_add(b1)?,
            a0.checked_add(b0)?,
        ]))
    }

    /// The sum the limb sums stand for (exact: each limb sum is below 2^63, the total below 2^106).
    pub fn total(self) -> i128 {
        let [l2, l1, l0] = self.0.map(i128::from);
        (l2 << (2 * LIMB_BITS)) + (l1 << LIMB_BITS) + l0
    }
}

/// Σ `values`; `None` on overflow (which takes 2^64 terms of 63 bits).
pub fn checked_sum(values: impl IntoIterator<Item = i128>) -> Option<i128> {
    values.into_iter().try_fold(0i128, i128::checked_add)
}

impl From<AmountError> for PriceError {
    fn from(error: AmountError) -> Self {
        match error {
            AmountError::Malformed => PriceError::Malformed,
            AmountError::TooLarge(_) => PriceError::TooLarge,
        }
    }
}

/// A bound a client sets on money, such as a key's monthly spend limit or the most a download
/// may cost: written like a price (`^\d+(\.\d{1,6})?$`, a JSON number or a string) and at most
/// a maximum the caller names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(i64);

/// Why an amount was refused (422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not `^\d+(\.\d{1,6})?$`.
    #[error("must be a non-negative decimal with at most 6 decimals")]
    Malformed,
    /// Above the maximum (in micro-USD).
    #[error("must be at most {}", format_micros(*.0))]
    TooLarge(i64),
}

impl Amount {
    /// Parses `^\d+(\.\d{1,6})?$`, at most `max_micros`.
    pub fn parse(raw: &str, max_micros: i64) -> Result<Self, AmountError> {
        let (whole, fraction) = match raw.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (raw, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || fraction.is_some_and(|f| !digits(f) || f.len() > 6) {
            return Err(AmountError::Malformed);
        }
        let too_large = AmountError::TooLarge(max_micros);
        let whole = whole.trim_start_matches('0');
        // Fourteen whole digits never fit 63 bits of micro-units (checked below for thirteen).
        if whole.len() > 13 {
            return Err(too_large);
        }
        let units: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| AmountError::Malformed)?
        };
        let micros: i64 = format!("{:0<6}", fraction.unwrap_or(""))
            .parse()
            .map_err(|_| AmountError::Malformed)?;
        match units
            .checked_mul(MICROS)
            .and_then(|u| u.checked_add(micros))
        {
            Some(amount) if amount <= max_micros => Ok(Amount(amount)),
            _ => Err(too_large),
        }
    }

    /// An amount from a JSON number, held to the same rules (see [`Price::from_json_number`]).
    pub fn from_json_number(
        number: &serde_json::Number,
        max_micros: i64,
    ) -> Result<Self, AmountError> {
        let text = number.to_string();
        match plain_notation(&text) {
            Some(plain) => Self::parse(&plain, max_micros),
            None => Self::parse(&text, max_micros),
        }
    }

    /// An amount from a JSON number or string; any other JSON type is `Malformed`.
    pub fn from_json(value: &serde_json::Value, max_micros: i64) -> Result<Self, AmountError> {
        match value {
            serde_json::Value::Number(n) => Self::from_json_number(n, max_micros),
            serde_json::Value::String(s) => Self::parse(s, max_micros),
            _ => Err(AmountError::Malformed),
        }
    }

    /// The amount in micro-units.
    pub fn micros(self) -> i64 {
        self.0
    }

    /// An amount the service computed (a charge, a total), in micro-units.
    pub fn from_micros(micros: i64) -> Self {
        Amount(micros)
    }
}

/// A sum of charges in micro-USD (revenue, spend), wider than any single charge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Total(i128);

impl Total {
    /// A sum in micro-units.
    pub fn from_micros(micros: i128) -> Self {
        Total(micros)
    }

    /// The sum in micro-units.
    pub fn micros(self) -> i128 {
        self.0
    }
}

/// Serialized as a JSON number in units, like [`Price`].
impl serde::Serialize for Total {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        json_number(self.0).serialize(serializer)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Total {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        Amount::schema()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Total {}

/// Serialized as a JSON number in units, like [`Price`].
impl serde::Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Price(self.0).serialize(serializer)
    }
}

/// An amount in a response (SPEC §1.6): a plain decimal with at most 6 places.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Amount {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .minimum(Some(0))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Amount {}

impl From<i64> for Amount {
    fn from(micros: i64) -> Self {
        Amount(micros)
    }
}

/// The one currency (SPEC §1.6): serialized as `"USD"`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Usd;

impl serde::Serialize for Usd {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("USD")
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Usd {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^USD$"))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Usd {}

/// Rewrites `d[.ddd]e[+-]x` as a plain decimal (`1.2e-6` → `0.0000012`); `None` without an
/// exponent or when the text is not of that shape (then the caller's strict parse refuses it).
fn plain_notation(text: &str) -> Option<String> {
    let (mantissa, exponent) = text.split_once(['e', 'E'])?;
    let exponent: i32 = exponent
        .strip_prefix('+')
        .unwrap_or(exponent)
        .parse()
        .ok()?;
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() || !(whole.bytes().chain(fraction.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Anything this far out is refused by the range check or as too many decimals anyway; the
    // bound keeps a hostile exponent from allocating.
    if !(-40..=40).contains(&exponent) {
        return Some(if exponent > 0 {
            "9".repeat(41)
        } else {
            "0.".to_owned() + &"0".repeat(41) + "1"
        });
    }
    let digits = format!("{whole}{fraction}");
    let point = whole.len() as i32 + exponent;
    let plain = if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}", "0".repeat(point as usize - digits.len()))
    } else {
        let (w, f) = digits.split_at(point as usize);
        format!("{w}.{f}")
    };
    // `1.0e2` → `100` but `1.50e1` → `15.0`: drop the zeros the shift left after the point.
    Some(match plain.split_once('.') {
        Some((w, f)) if f.bytes().all(|b| b == b'0') => w.to_owned(),
        _ => plain,
    })
}

/// Formats micro-units in plain notation with trailing zeros dropped (`0.05`, `12`, `0.000001`).
/// Takes any integer up to `i128`, so exact sums print exactly.
pub fn format_micros(micros: impl Into<i128>) -> String {
    let micros: i128 = micros.into();
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    let (units, fraction) = (abs / MICROS as u128, abs % MICROS as u128);
    if fraction == 0 {
        format!("{sign}{units}")
    } else {
        let fraction = format!("{fraction:06}");
        format!("{sign}{units}.{}", fraction.trim_end_matches('0'))
    }
}

/// Micro-units as a JSON number (parsed from its exact decimal text, so it prints as written —
/// except below 0.00001, where serde_json's `f64` printer uses exponent form such as `1e-6`).
///
/// A JSON number with a fraction is held as an `f64`: it prints exactly while the amount is below
/// 2^33 units (8,589,934,592 USD), where neighbouring micro-units are still distinct doubles;
/// above that a fractional amount prints as the nearest double. Whole amounts print exactly up
/// to `u64::MAX`.
pub fn json_number(micros: impl Into<i128>) -> serde_json::Value {
    serde_json::from_str(&format_micros(micros)).unwrap_or(serde_json::Value::Null)
}

/// A price in micro-units as stored, checked to lie in 0..=1,000,000 USD.
impl TryFrom<i64> for Price {
    type Error = PriceError;
    fn try_from(micros: i64) -> Result<Self, PriceError> {
        match micros {
            m if m < 0 => Err(PriceError::Malformed),
            m if m > Self::MAX.0 => Err(PriceError::TooLarge),
            m => Ok(Price(m)),
        }
    }
}

/// A price in a response (SPEC §1.6): a plain decimal with at most 6 places.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Price {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .minimum(Some(0))
            .maximum(Some(1_000_000))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Price {}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_micros(self.0))
    }
}

impl serde::Serialize for Price {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Whole amounts as integers (`2`, not `2.0`); the rest through f64, see the module docs.
        if self.0 % MICROS == 0 {
            serializer.serialize_i64(self.0 / MICROS)
        } else {
            serializer.serialize_f64(self.0 as f64 / MICROS as f64)
        }
    }
}

impl<'de> serde::Deserialize<'de> for Price {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = Price;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a price: a number or decimal string, 0..=1000000 with ≤6 decimals")
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Price, E> {
                Price::from_json_number(&v.into()).map_err(E::custom)
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Price, E> {
                Price::from_json_number(&v.into()).map_err(E::custom)
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Price, E> {
                let number = serde_json::Number::from_f64(v)
                    .ok_or_else(|| E::custom(PriceError::Malformed))?;
                Price::from_json_number(&number).map_err(E::custom)
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Price, E> {
                Price::parse(v).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(Visitor)
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
    fn the_currency_is_usd_and_stored_micros_are_amounts() {
        assert_eq!(serde_json::to_value(Usd).unwrap(), "USD");
        assert_eq!(Amount::from(1_500_000), Amount::from_micros(1_500_000));
        assert_eq!(serde_json::to_value(Amount::from(1_500_000)).unwrap(), 1.5);
    }

    #[test]
    fn totals_serialize_in_plain_notation() {
        assert_eq!(serde_json::to_value(Total::from_micros(0)).unwrap(), 0);
        assert_eq!(
            serde_json::to_value(Total::from_micros(1_500_000)).unwrap(),
            1.5
        );
        // Past i64, whole amounts still print exactly.
        let wide = 100_000_000_000_000_000_000_i128;
        assert_eq!(Total::from_micros(wide).micros(), wide);
        assert_eq!(
            serde_json::to_string(&Total::from_micros(wide)).unwrap(),
            format_micros(wide)
        );
    }

    #[test]
    fn amounts_serialize_as_prices_do() {
        for micros in [0, 1, 50_000, 2_000_000, MAX_CHARGE_MICROS] {
            assert_eq!(
                serde_json::to_value(Amount::from_micros(micros)).unwrap(),
                serde_json::to_value(Price(micros)).unwrap()
            );
        }
        assert_eq!(Amount::from_micros(7).micros(), 7);
        assert_eq!(
            serde_json::to_value(Amount::from_micros(2_500_000)).unwrap(),
            2.5
        );
    }

    #[test]
    fn stored_prices_are_checked() {
        assert_eq!(Price::try_from(0), Ok(Price::from_micros(0)));
        assert_eq!(Price::try_from(Price::MAX.micros()), Ok(Price::MAX));
        assert_eq!(Price::try_from(-1), Err(PriceError::Malformed));
        assert_eq!(
            Price::try_from(Price::MAX.micros() + 1),
            Err(PriceError::TooLarge)
        );
    }

    #[test]
    fn amounts_print_in_plain_notation() {
        assert_eq!(format_micros(0), "0");
        assert_eq!(format_micros(-1), "-0.000001");
        assert_eq!(format_micros(50_000), "0.05");
        assert_eq!(format_micros(2 * MICROS), "2");
        assert_eq!(format_micros(1), "0.000001");
        assert_eq!(json_number(50_000).to_string(), "0.05");
    }

    fn number(text: &str) -> serde_json::Number {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn json_numbers_are_held_to_the_same_rules() {
        assert_eq!(
            Price::from_json_number(&number("0.05")).unwrap().micros(),
            50_000
        );
        assert_eq!(
            Price::from_json_number(&number("0.000001"))
                .unwrap()
                .micros(),
            1
        );
        assert_eq!(
            Price::from_json_number(&number("0.000012"))
                .unwrap()
                .micros(),
            12
        );
        assert_eq!(
            Price::from_json_number(&number("1000000")).unwrap(),
            Price::MAX
        );
        assert_eq!(
            Price::from_json_number(&number("1000000.0")).unwrap(),
            Price::MAX
        );
        assert_eq!(
            Price::from_json_number(&number("15")).unwrap().micros(),
            15 * MICROS
        );
        for bad in ["-1", "-0.5", "-0", "0.0000001", "0.1234567"] {
            assert_eq!(
                Price::from_json_number(&number(bad)),
                Err(PriceError::Malformed),
                "{bad}"
            );
        }
        for big in ["1000001", "1000000.5", "1e16", "1e300"] {
            assert_eq!(
                Price::from_json_number(&number(big)),
                Err(PriceError::TooLarge),
                "{big}"
            );
        }
    }

    #[test]
    fn a_seven_decimal_number_is_refused_even_when_it_reads_as_an_exponent() {
        assert_eq!(
            Price::from_json_number(&number("0.0000012")),
            Err(PriceError::Malformed)
        );
    }

    #[test]
    fn exponents_expand_to_plain_decimals() {
        assert_eq!(plain_notation("1e-6").as_deref(), Some("0.000001"));
        assert_eq!(plain_notation("1.2e-6").as_deref(), Some("0.0000012"));
        assert_eq!(
            plain_notation("1e+16").as_deref(),
            Some("10000000000000000")
        );
        assert_eq!(plain_notation("1.50e1").as_deref(), Some("15"));
        assert_eq!(plain_notation("1.25e1").as_deref(), Some("12.5"));
        assert_eq!(plain_notation("0.05"), None);
        assert_eq!(plain_notation("-1e-6"), None);
    }

    #[test]
    fn prices_serialize_as_json_numbers_in_units() {
        let json = |raw: &str| serde_json::to_string(&Price::parse(raw).unwrap()).unwrap();
        assert_eq!(json("0.05"), "0.05");
        assert_eq!(json("2"), "2");
        assert_eq!(json("123456.789012"), "123456.789012");
        assert_eq!(json("1000000"), "1000000");
        let read = |text: &str| serde_json::from_str::<Price>(text);
        assert_eq!(read("0.05").unwrap().micros(), 50_000);
        assert_eq!(read("\"0.05\"").unwrap().micros(), 50_000);
        assert!(read("-1").is_err());
        assert!(read("1000001").is_err());
        assert!(
            read("\"1e-6\"").is_err(),
            "strings follow the strict pattern"
        );
    }

    #[test]
    fn default_prices_follow_the_monetization_mode() {
        use crate::dataset::MonetizationMode::*;
        assert_eq!(Open.default_price(), Price::parse("0.01").unwrap());
        assert_eq!(Premium.default_price(), Price::parse("0.05").unwrap());
        assert_eq!(OutcomeShare.default_price(), Price::parse("0.005").unwrap());
    }

    #[test]
    fn amounts_follow_the_price_rules_up_to_their_maximum() {
        let max = 1_000_000_000_000 * MICROS;
        assert_eq!(Amount::parse("2.5", max).unwrap().micros(), 2_500_000);
        assert_eq!(Amount::parse("1000000000000", max).unwrap().micros(), max);
        assert_eq!(
            Amount::parse("1000000000000.000001", max),
            Err(AmountError::TooLarge(max))
        );
        assert_eq!(
            Amount::parse("99999999999999999999", max),
            Err(AmountError::TooLarge(max))
        );
        for bad in ["", "-1", "1e3", "0.0000001", "1,5", " 1"] {
            assert_eq!(
                Amount::parse(bad, max),
                Err(AmountError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            Amount::from_json(&serde_json::json!(1e12), max)
                .unwrap()
                .micros(),
            max
        );
        assert_eq!(
            Amount::from_json(&serde_json::json!(0.000001), max)
                .unwrap()
                .micros(),
            1
        );
        assert_eq!(
            Amount::from_json(&serde_json::json!("2.5"), max)
                .unwrap()
                .micros(),
            2_500_000
        );
        assert_eq!(
            Amount::from_json(&serde_json::json!("1e3"), max),
            Err(AmountError::Malformed),
            "strings follow the strict pattern"
        );
        assert_eq!(
            Amount::from_json(&serde_json::json!(true), max),
            Err(AmountError::Malformed)
        );
        assert_eq!(
            AmountError::TooLarge(10_000_000 * MICROS).to_string(),
            "must be at most 10000000"
        );
    }

    #[test]
    fn limbs_split_and_join_exactly() {
        assert_eq!(Limbs::of(0), Some(Limbs([0, 0, 0])));
        assert_eq!(Limbs::of(LIMB.into()), Some(Limbs([0, 1, 0])));
        assert_eq!(
            Limbs::of(i64::MAX.into()),
            Some(Limbs([LIMB - 1, LIMB - 1, LIMB - 1]))
        );
        assert_eq!(Limbs::of(-1), None);
        assert_eq!(Limbs::of(i128::from(i64::MAX) + 1), None);
        let max = Limbs::of(MAX_CHARGE_MICROS.into()).unwrap();
        assert_eq!(max.total(), i128::from(MAX_CHARGE_MICROS));
        assert_eq!(Limbs([i64::MAX, 0, 0]).checked_add(Limbs([1, 0, 0])), None);
        assert_eq!(MAX_CHARGE_MICROS, 10_000_000_000_000);
    }

    #[test]
    fn large_amounts_print_exactly() {
        assert_eq!(
            format_micros(i128::from(i64::MAX) * 10),
            "92233720368547.75807"
        );
        assert_eq!(format_micros(-1_500_000i64), "-1.5");
        assert_eq!(
            json_number(5_000_000_000_000_010i64).to_string(),
            "5000000000.00001"
        );
        assert_eq!(
            json_number(1_000_000_000_000_002i64).to_string(),
            "1000000000.000002"
        );
        assert_eq!(
            json_number(18_446_744_073_709_551_615_000_000i128).to_string(),
            "18446744073709551615"
        );
    }

    proptest! {
        #[test]
        fn limb_sums_equal_the_sum(terms in prop::collection::vec(0..=i64::MAX, 0..64)) {
            let limbs = terms
                .iter()
                .map(|t| Limbs::of((*t).into()).unwrap())
                .try_fold(Limbs::default(), Limbs::checked_add)
                .unwrap();
            let exact = checked_sum(terms.iter().map(|t| i128::from(*t))).unwrap();
            prop_assert_eq!(limbs.total(), exact);
            for limb in Limbs::of(terms.first().copied().unwrap_or(0).into()).unwrap().0 {
                prop_assert!((0..LIMB).contains(&limb));
            }
        }

        #[test]
        fn amounts_below_2_pow_33_units_print_exactly(micros in 0i64..(1i64 << 33) * MICROS) {
            let printed = json_number(micros).to_string();
            // Below 0.00001 serde_json writes an exponent, which only the f64 reading takes.
            let reread = match printed.split_once('.') {
                _ if printed.contains('e') => (printed.parse::<f64>().unwrap() * 1e6).round() as i64,
                Some((w, f)) => w.parse::<i64>().unwrap() * MICROS + format!("{f:0<6}").parse::<i64>().unwrap(),
                None => printed.parse::<i64>().unwrap() * MICROS,
            };
            prop_assert_eq!(reread, micros, "{}", printed);
        }

        #[test]
        fn serde_round_trips_through_json(micros in 0i64..=1_000_000 * MICROS) {
            let price = Price::from_micros(micros);
            let text = serde_json::to_string(&price).unwrap();
            prop_assert_eq!(serde_json::from_str::<Price>(&text).unwrap(), price);
            let number: serde_json::Number = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(Price::from_json_number(&number).unwrap(), price);
        }

        #[test]
        fn ordering_is_numeric_ordering(
            a in 0i64..=1_000_000 * MICROS,
            b in 0i64..=1_000_000 * MICROS,
            zeros in 0usize..3,
        ) {
            // Leading zeros and a padded fraction denote the same amount.
            let padded = |m: i64| format!("{}{}.{:06}", "0".repeat(zeros), m / MICROS, m % MICROS);
            let (pa, pb) = (Price::parse(&padded(a)).unwrap(), Price::parse(&padded(b)).unwrap());
            prop_assert_eq!(pa.cmp(&pb), a.cmp(&b));
            prop_assert_eq!(pa, Price::from_micros(a));
        }

        #[test]
        fn more_than_six_decimals_are_refused(whole in 0u32..1000, fraction in "[0-9]{7,12}") {
            prop_assert_eq!(Price::parse(&format!("{whole}.{fraction}")), Err(PriceError::Malformed));
        }

        #[test]
        fn signs_exponents_and_stray_characters_are_refused(
            digits in "[0-9]{1,6}(\\.[0-9]{1,6})?",
            decoration in prop_oneof![
                Just(("-", "")), Just(("+", "")), Just(("", "e2")), Just(("", "E-1")),
                Just((" ", "")), Just(("", " ")), Just(("", ".")), Just((".", "")), Just(("$", "")),
            ],
        ) {
            let raw = format!("{}{digits}{}", decoration.0, decoration.1);
            prop_assert_eq!(Price::parse(&raw), Err(PriceError::Malformed));
        }

        #[test]
        fn amounts_above_a_million_are_refused(micros in 1_000_000 * MICROS + 1..i64::MAX / 2) {
            prop_assert_eq!(Price::parse(&format_micros(micros)), Err(PriceError::TooLarge));
        }

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
