//! Background jobs: review expiry (staged objects past `review_expires_at` are rejected with
//! `review_expired`) and the dataset deletion cascade (objects deleted, blobs removed, then the
//! dataset marked `deleted`). Both are idempotent, so several instances may run them.

use std::time::Duration;

use aggregates::dataset::DatasetCommand;
use aggregates::object::ObjectCommand;
use aggregates::{Dataset, Object};
use tokio::sync::watch;

use crate::app::AppState;
use crate::store::Actor;

/// How often the jobs run without a wake-up.
const INTERVAL: Duration = Duration::from_secs(5);

/// Runs the jobs until `shutdown` turns true.
pub async fn run(state: AppState, mut shutdown: watch::Receiver<bool>) {
    let mut wake = state.jobs.subscribe();
    loop {
        if let Err(error) = expire_reviews(&state).await {
            tracing::warn!(%error, "review expiry failed; will retry");
        }
        if let Err(error) = clean_up_datasets(&state).await {
            tracing::warn!(%error, "dataset cleanup failed; will retry");
        }
        tokio::select! {
            _ = tokio::time::sleep(INTERVAL) => {}
            _ = wake.changed() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Asks the jobs to run now (after a dataset deletion).
pub fn wake(state: &AppState) {
    state.jobs.send_modify(|n| *n = n.wrapping_add(1));
}

/// Rejects every staged object whose review window has passed.
pub async fn expire_reviews(state: &AppState) -> Result<usize, crate::http::error::AppError> {
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
pub async fn clean_up_datasets(state: &AppState) -> Result<usize, crate::http::error::AppError> {
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
