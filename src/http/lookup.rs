//! Resources looked up for a caller, below every handler module: the caller's own dataset or
//! object (another tenant's, an unknown or a malformed id are all 404, SPEC §2.7), and a row read
//! back after a write once the projections have applied it.

use aggregates::dataset::DatasetStatus;
use aggregates::{DatasetId, ObjectId};
use projections::datasets::{self, DatasetRow};
use projections::objects::{self, ObjectRow};

use crate::auth::Principal;
use crate::error::AppError;
use crate::state::AppState;

/// The caller's own dataset, not deleted.
pub async fn own_dataset(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<DatasetRow, AppError> {
    DatasetId::parse(id).map_err(|_| AppError::NotFound)?;
    match datasets::dataset(&state.store.db, id).await? {
        Some(row)
            if row.tenant_id.as_str() == principal.tenant_id
                && row.status != DatasetStatus::Deleted =>
        {
            Ok(row)
        }
        _ => Err(AppError::NotFound),
    }
}

/// The caller's own object (in any status) whose dataset is not deleted, with the dataset.
pub async fn own_object(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<(ObjectRow, DatasetRow), AppError> {
    ObjectId::parse(id).map_err(|_| AppError::NotFound)?;
    let object = match objects::object(&state.store.db, id).await? {
        Some(row) if row.tenant_id.as_str() == principal.tenant_id => row,
        _ => return Err(AppError::NotFound),
    };
    let dataset = own_dataset(state, principal, object.dataset_id.as_str()).await?;
    Ok((object, dataset))
}

/// The dataset as this request's writes left it.
pub async fn written_dataset(state: &AppState, id: &str) -> Result<DatasetRow, AppError> {
    state.store.settle_request().await;
    datasets::dataset(&state.store.db, id)
        .await?
        .ok_or_else(|| AppError::internal("dataset missing from read model"))
}

/// The object as this request's writes left it.
pub async fn written_object(state: &AppState, id: &str) -> Result<ObjectRow, AppError> {
    state.store.settle_request().await;
    objects::object(&state.store.db, id)
        .await?
        .ok_or_else(|| AppError::internal("object missing from read model"))
}
