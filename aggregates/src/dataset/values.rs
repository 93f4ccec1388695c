//! A dataset's value objects: its name, description and closed sets of terms.

use crate::choice;
use crate::money::Price;
use crate::text::{trimmed, TextError};

choice!(
    /// What a dataset holds.
    SourceModality { Document => "document", Image => "image", Video => "video", Audio => "audio", Mixed => "mixed" }
);
choice!(
    /// How a dataset earns.
    MonetizationMode { Open => "open", Premium => "premium", OutcomeShare => "outcome_share" }
);
choice!(
    /// How the unit price of a result is derived from `price_per_result`.
    PricingModel { Fixed => "fixed", TimeDecay => "time_decay", DemandCurve => "demand_curve" }
);
choice!(
    /// Who may find and use a dataset.
    Visibility { Private => "private", Listed => "listed", Restricted => "restricted" }
);
choice!(
    /// A dataset's lifecycle state (SPEC §4.2).
    DatasetStatus {
        Draft => "draft",
        Active => "active",
        Paused => "paused",
        Suspended => "suspended",
        PendingDeletion => "pending_deletion",
        Deleted => "deleted",
    }
);

impl DatasetStatus {
    /// Whether its deletion has begun: its objects no longer change or leave (SPEC §4.2).
    pub fn is_being_deleted(self) -> bool {
        matches!(
            self,
            DatasetStatus::PendingDeletion | DatasetStatus::Deleted
        )
    }
}

impl MonetizationMode {
    /// The default price per result, in micro-units.
    pub fn default_price_micros(self) -> i64 {
        match self {
            MonetizationMode::Open => 10_000,
            MonetizationMode::Premium => 50_000,
            MonetizationMode::OutcomeShare => 5_000,
        }
    }

    /// The default price per result: open 0.01, premium 0.05, outcome_share 0.005.
    pub fn default_price(self) -> Price {
        Price::from_micros(self.default_price_micros())
    }
}

/// A dataset's name: trimmed, 1..=200 characters; need not be unique.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct DatasetName(String);

impl DatasetName {
    /// Trims and checks the length.
    pub fn parse(raw: &str) -> Result<Self, TextError> {
        trimmed(raw, 200).map(Self)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A dataset's description: at most 5000 characters, empty allowed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Description(String);

impl Description {
    /// Checks the length.
    pub fn parse(raw: &str) -> Result<Self, TextError> {
        if raw.chars().count() > 5000 {
            Err(TextError::TooLong(5000))
        } else {
            Ok(Self(raw.to_owned()))
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip() {
        for status in DatasetStatus::ALL {
            assert_eq!(DatasetStatus::parse(status.as_str()), Some(*status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
            assert_eq!(
                DatasetStatus::try_from(status.as_str().to_owned()),
                Ok(*status)
            );
        }
        assert_eq!(
            Visibility::try_from("public".to_owned()),
            Err(crate::choice::UnknownChoice("public".into()))
        );
        assert_eq!(Visibility::parse("public"), None);
        assert_eq!(MonetizationMode::expected(), "open|premium|outcome_share");
    }

    #[test]
    fn deletion_begins_at_pending_deletion() {
        for status in DatasetStatus::ALL {
            assert_eq!(
                status.is_being_deleted(),
                matches!(
                    status,
                    DatasetStatus::PendingDeletion | DatasetStatus::Deleted
                ),
                "{status}"
            );
        }
        assert!(!DatasetStatus::Active.is_being_deleted());
        assert!(DatasetStatus::PendingDeletion.is_being_deleted());
    }

    #[test]
    fn names_and_descriptions_are_bounded() {
        assert_eq!(
            DatasetName::parse(" AP Invoices ").unwrap().as_str(),
            "AP Invoices"
        );
        assert!(DatasetName::parse(&"x".repeat(200)).is_ok());
        assert!(DatasetName::parse(&"x".repeat(201)).is_err());
        assert!(DatasetName::parse("  ").is_err());
        assert!(Description::parse("").is_ok());
        let longest = "é".repeat(5000);
        assert_eq!(Description::parse(&longest).unwrap().as_str(), longest);
        assert_eq!(
            Description::parse(&"é".repeat(5001)),
            Err(TextError::TooLong(5000))
        );
    }
}
