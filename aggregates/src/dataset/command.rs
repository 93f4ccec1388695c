use super::{
    DatasetName, DatasetProfile, DatasetStatus, Description, MonetizationMode, PricingModel,
    SourceModality, Visibility,
};
use crate::money::Price;
use crate::TenantId;

/// Commands on a dataset.
#[derive(Debug, Clone)]
pub enum DatasetCommand {
    /// Create the dataset as `draft` or `active`.
    Create {
        profile: DatasetProfile,
        status: DatasetStatus,
    },
    /// Change some fields (and the status among draft, active and paused).
    Update(DatasetPatch),
    /// The owner deletes it: `pending_deletion` until cleanup finishes.
    RequestDeletion,
    /// Cleanup finished (system).
    CompleteDeletion,
    /// Platform suspension (system).
    Suspend,
    /// Open a restricted dataset to another tenant (idempotent).
    GrantEntitlement { tenant_id: TenantId },
    /// Withdraw an entitlement.
    RevokeEntitlement { tenant_id: TenantId },
}

/// The fields a PATCH may change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct DatasetPatch {
    pub name: Option<DatasetName>,
    pub description: Option<Description>,
    pub source_modality: Option<SourceModality>,
    pub monetization_mode: Option<MonetizationMode>,
    pub pricing_model: Option<PricingModel>,
    pub visibility: Option<Visibility>,
    pub price_per_result: Option<Price>,
    pub status: Option<DatasetStatus>,
}

impl DatasetPatch {
    /// The profile and status after the patch, and the names of the fields that changed.
    pub fn apply(
        &self,
        profile: &DatasetProfile,
        status: DatasetStatus,
    ) -> (DatasetProfile, DatasetStatus, Vec<String>) {
        let mut next = profile.clone();
        let mut changed = Vec::new();
        macro_rules! set {
            ($field:ident) => {
                if let Some(value) = &self.$field {
                    if *value != next.$field {
                        next.$field = value.clone();
                        changed.push(stringify!($field).to_owned());
                    }
                }
            };
        }
        set!(name);
        set!(description);
        set!(source_modality);
        set!(monetization_mode);
        set!(pricing_model);
        set!(visibility);
        set!(price_per_result);
        let mut next_status = status;
        if let Some(target) = self.status {
            if target != status {
                next_status = target;
                changed.push("status".to_owned());
            }
        }
        (next, next_status, changed)
    }
}
