//! Background jobs: review expiry (staged objects past `review_expires_at` are rejected with
//! `review_expired`), the dataset deletion cascade (objects deleted, blobs removed, then the
//! dataset marked `deleted`), the purge of idempotency records past their 24 hours and, less often,
//! the blob collector (uploads never confirmed, copies left by interrupted confirms, bytes of
//! deleted objects), and the signed audit tree heads kept every 10,000 events and hourly. All are
//! idempotent, so several instances may run them.

use std::time::Duration;

use aggregates::dataset::DatasetCommand;
use aggregates::object::ObjectCommand;
use aggregates::{Dataset, Object};
use tokio::sync::watch;

use crate::state::AppState;
use crate::store::Actor;

/// How often the jobs run without a wake-up.
const INTERVAL: Duration = Duration::from_secs(5);
/// How often idempotency records past their retention are deleted.
const PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// How often the blob collector runs.
const COLLECT_INTERVAL: Duration = Duration::from_secs(600);
/// How long after its URL expired an unconfirmed upload is kept, and how old an unreferenced copy
/// must be before it is collected (a confirm may still be working on a younger one).
pub const BLOB_GRACE: chrono::Duration = chrono::Duration::hours(1);

/// Runs the jobs until `shutdown` turns true.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut wake = state.jobs.subscribe();
    let mut next_collection = tokio::time::Instant::now();
    let mut next_purge = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_collection {
            next_collection = tokio::time::Instant::now() + COLLECT_INTERVAL;
            match collect_blobs(&state).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "collected unreferenced blobs"),
                Err(error) => tracing::warn!(%error, "blob collection failed; will retry"),
            }
        }
        if let Err(error) = expire_reviews(&state).await {
            tracing::warn!(%error, "review expiry failed; will retry");
        }
        if let Err(error) = clean_up_datasets(&state).await {
            tracing::warn!(%error, "dataset cleanup failed; will retry");
        }
        if let Err(error) =
            crate::audit::keep_heads(&state.store.db, &state.audit_key, state.store.clock.now())
                .await
        {
            tracing::warn!(%error, "keeping audit tree heads failed; will retry");
        }
        if tokio::time::Instant::now() >= next_purge {
            next_purge = tokio::time::Instant::now() + PURGE_INTERVAL;
            if let Err(error) =
                crate::idempotency::purge(&state.store.db, state.store.clock.now()).await
            {
                tracing::warn!(%error, "idempotency purge failed; will retry");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = wake.changed() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Rejects every staged object whose review window has passed.
pub async fn expire_reviews(state: &AppState) -> Result<usize, crate::error::AppError> {
    let now = state.store.clock.now();
    let due = projections::objects::expired_reviews(
        &state.store.db,
        &aggregates::timestamp::format(now),
        500,
    )
    .await?;
    let mut expired = 0;
    for object_id in due {
        let command = ObjectCommand::ExpireReview {
            reviewed_at: state.store.clock.now(),
        };
        match state
            .store
            .execute::<Object>(&object_id, command, &(), &Actor::system())
            .await
        {
            Ok(_) => expired += 1,
            // Reviewed meanwhile: nothing to do.
            Err(crate::store::CommandError::Rejected(_))
            | Err(crate::store::CommandError::Conflict) => {}
            Err(other) => return Err(other.into()),
        }
    }
    Ok(expired)
}

/// Finishes every dataset in `pending_deletion`.
pub async fn clean_up_datasets(state: &AppState) -> Result<usize, crate::error::AppError> {
    let pending: Vec<String> = sqlx::query_scalar(
        "SELECT dataset_id FROM datasets WHERE status = 'pending_deletion' ORDER BY dataset_id",
    )
    .fetch_all(&state.store.db.pool)
    .await?;
    for dataset_id in &pending {
        for object_id in projections::objects::live_objects_of(&state.store.db, dataset_id).await? {
            match state
                .store
                .execute::<Object>(&object_id, ObjectCommand::Delete, &(), &Actor::system())
                .await
            {
                Ok(_) | Err(crate::store::CommandError::Rejected(_)) => {}
                Err(other) => return Err(other.into()),
            }
            state.blobs.delete(&object_id).await?;
        }
        match state
            .store
            .execute::<Dataset>(
                dataset_id,
                DatasetCommand::CompleteDeletion,
                &(),
                &Actor::system(),
            )
            .await
        {
            Ok(_) | Err(crate::store::CommandError::Rejected(_)) => {}
            Err(other) => return Err(other.into()),
        }
    }
    Ok(pending.len())
}

/// Removes every blob no object needs: an upload whose object is confirmed, cancelled or deleted,
/// or whose URL expired more than [`BLOB_GRACE`] ago without a confirm; a copy under a name other
/// than the object's checksum older than [`BLOB_GRACE`]; anything of a deleted or cancelled
/// object; anything of an id without events older than [`BLOB_GRACE`]. Keeping is decided from
/// the read model only when it is safe (a confirmed object's own bytes); every removal is decided
/// from the object's events, so a read model being rebuilt never costs a blob. Returns how many
/// blobs were removed.
pub async fn collect_blobs(state: &AppState) -> Result<usize, crate::error::AppError> {
    use crate::blobs::Stored;
    use aggregates::object::ObjectStatus;
    let inventory = state.blobs.inventory().await?;
    let ids: Vec<&str> = {
        let mut ids: Vec<&str> = inventory.iter().map(|(id, _, _)| id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let confirmed: std::collections::HashMap<String, String> =
        projections::objects::confirmed_checksums(&state.store.db, &ids)
            .await?
            .into_iter()
            .collect();
    let now = state.store.clock.now();
    let mut removed = 0;
    let mut loaded: std::collections::HashMap<String, Object> = std::collections::HashMap::new();
    for (object_id, stored, stored_at) in inventory {
        if matches!(&stored, Stored::Sealed(name) if confirmed.get(&object_id) == Some(name)) {
            continue;
        }
        if !loaded.contains_key(&object_id) {
            let object = state
                .store
                .load::<Object>(&object_id)
                .await
                .map_err(crate::error::AppError::internal)?;
            loaded.insert(object_id.clone(), object);
        }
        let object = &loaded[&object_id];
        let old = now - stored_at > BLOB_GRACE;
        let expired = |extra: chrono::Duration| {
            object
                .upload_expires_at()
                .is_some_and(|at| now > at + BLOB_GRACE + extra)
        };
        let remove = match (object.status(), &stored) {
            (None, _) => old,
            (Some(ObjectStatus::Deleted | ObjectStatus::Cancelled), _) => true,
            (Some(ObjectStatus::PendingUpload), Stored::Upload) => {
                expired(chrono::Duration::zero())
            }
            // A confirm may be sealing this copy right now: wait past the upload itself.
            (Some(ObjectStatus::PendingUpload), _) => expired(BLOB_GRACE),
            (Some(_), Stored::Upload) => true,
            (Some(_), Stored::Sealed(name)) => {
                object.checksum_sha256().map(|c| c.as_str()) != Some(name.as_str()) && old
            }
            (Some(_), Stored::Legacy) => false,
        };
        if remove {
            state.blobs.remove(&object_id, &stored).await?;
            removed += 1;
        }
    }
    Ok(removed)
}
