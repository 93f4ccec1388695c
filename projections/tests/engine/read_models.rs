//! Read models fed stored events hold the rows those events describe, and a rebuild from the log
//! gives the same rows.

use std::sync::Arc;

use aggregates::dataset::{DatasetEvent, DatasetProfile};
use aggregates::object::ObjectEvent;
use aggregates::{
    Dataset, DatasetId, DatasetName, DatasetStatus, Description, MonetizationMode, Object,
    ObjectId, ObjectStatus, Price, PricingModel, Sha256Hex, SourceModality, TenantId, Visibility,
};
use projections::datasets::{self, DatasetRow, DatasetsProjection, EntitlementsProjection};
use projections::{Projection, ProjectorEngine};

use crate::helpers::{start, Store};

const CREATED_AT: &str = "2026-01-05T09:00:00.000000Z";
const UPDATED_AT: &str = "2026-01-06T10:30:00.000000Z";
const UPLOADED_AT: &str = "2026-01-07T11:00:00.000000Z";

fn profile() -> DatasetProfile {
    DatasetProfile {
        dataset_id: DatasetId::generate(),
        tenant_id: TenantId::generate(),
        name: DatasetName::parse("AP Invoices").unwrap(),
        description: Description::parse("Supplier invoices, 2025").unwrap(),
        source_modality: SourceModality::Document,
        monetization_mode: MonetizationMode::Premium,
        pricing_model: PricingModel::Fixed,
        visibility: Visibility::Listed,
        price_per_result: Price::parse("0.05").unwrap(),
    }
}

fn confirmed(profile: &DatasetProfile, size_bytes: u64) -> ObjectEvent {
    let now = chrono::Utc::now();
    ObjectEvent::ObjectUploadConfirmed {
        dataset_id: profile.dataset_id.clone(),
        tenant_id: profile.tenant_id.clone(),
        size_bytes,
        sha256: Sha256Hex::parse(&"ab".repeat(32)).unwrap(),
        uploaded_at: now,
        review_expires_at: now + chrono::Duration::days(7),
    }
}

#[tokio::test]
async fn a_dataset_fed_its_events_has_the_row_they_describe() {
    let store = Store::fresh().await;
    let projections: Vec<Arc<dyn Projection>> = vec![
        Arc::new(DatasetsProjection),
        Arc::new(EntitlementsProjection),
    ];
    let running = start(ProjectorEngine::new(store.db.clone(), projections)).await;
    let created = profile();
    let dataset = created.dataset_id.to_string();
    let (kept_by, dropped_by) = (TenantId::generate(), TenantId::generate());
    let renamed = DatasetProfile {
        name: DatasetName::parse("AP Invoices 2025").unwrap(),
        visibility: Visibility::Restricted,
        ..created.clone()
    };
    store
        .append::<Dataset>(
            &dataset,
            &[DatasetEvent::DatasetCreated {
                profile: created.clone(),
                status: DatasetStatus::Active,
            }],
            CREATED_AT,
        )
        .await;
    store
        .append::<Dataset>(
            &dataset,
            &[
                DatasetEvent::DatasetUpdated {
                    profile: renamed,
                    status: DatasetStatus::Paused,
                    changed: vec!["name".into(), "visibility".into(), "status".into()],
                },
                DatasetEvent::EntitlementGranted {
                    tenant_id: kept_by.clone(),
                },
                DatasetEvent::EntitlementGranted {
                    tenant_id: dropped_by.clone(),
                },
                DatasetEvent::EntitlementRevoked {
                    tenant_id: dropped_by.clone(),
                },
            ],
            UPDATED_AT,
        )
        .await;
    // Two uploads confirmed: one approved, the other deleted while it was still staged.
    let (approved, deleted) = (ObjectId::generate(), ObjectId::generate());
    let approval = ObjectEvent::ObjectApproved {
        dataset_id: created.dataset_id.clone(),
        tenant_id: created.tenant_id.clone(),
        size_bytes: 1000,
        note: None,
        reviewed_at: chrono::Utc::now(),
    };
    store
        .append::<Object>(
            &approved.to_string(),
            &[confirmed(&created, 1000), approval],
            UPLOADED_AT,
        )
        .await;
    let deletion = ObjectEvent::ObjectDeleted {
        dataset_id: created.dataset_id.clone(),
        tenant_id: created.tenant_id.clone(),
        previous: ObjectStatus::Staged,
        size_bytes: 250,
    };
    store
        .append::<Object>(
            &deleted.to_string(),
            &[confirmed(&created, 250), deletion],
            UPLOADED_AT,
        )
        .await;
    running.settle().await;

    let expected = DatasetRow {
        dataset_id: DatasetId::parse(&dataset).unwrap(),
        tenant_id: created.tenant_id.clone(),
        name: "AP Invoices 2025".into(),
        description: "Supplier invoices, 2025".into(),
        source_modality: SourceModality::Document,
        monetization_mode: MonetizationMode::Premium,
        pricing_model: PricingModel::Fixed,
        visibility: Visibility::Restricted,
        status: DatasetStatus::Paused,
        price: Price::from_micros(50_000),
        currency: aggregates::money::Usd,
        object_count: 1,
        active_object_count: 1,
        storage_bytes: 1000,
        created_at: CREATED_AT.into(),
        updated_at: UPDATED_AT.into(),
    };
    let row = datasets::dataset(&store.db, &dataset).await.unwrap();
    assert_eq!(row.as_ref(), Some(&expected));
    for (tenant, held) in [(&kept_by, true), (&dropped_by, false)] {
        let entitled = datasets::is_entitled(&store.db, &dataset, tenant.as_str()).await;
        assert_eq!(entitled.unwrap(), held, "entitlement of {tenant:?}");
    }

    // The read model is a function of the log: thrown away and rebuilt, it is the same.
    let engine = running.engine.clone();
    running.stop().await;
    let replayed = engine
        .rebuild(&DatasetsProjection, |_, _| {})
        .await
        .unwrap();
    assert_eq!(replayed, 9, "every event in the log is read once");
    let rebuilt = datasets::dataset(&store.db, &dataset).await.unwrap();
    assert_eq!(rebuilt, Some(expected));
    store.finish().await;
}
