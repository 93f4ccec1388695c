//! Datasets, entitlements, the catalog and tenant isolation.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_dataset_is_created_with_the_spec_defaults() {
    let app = spawn_app().await;
    let (token, _, tenant_id) = app.signup(&email()).await;
    let reply = app
        .post(
            "/v1/datasets",
            Some(&token),
            json!({"name": "  AP Invoices "}),
        )
        .await
        .expect(201);
    let d = reply.data();
    assert!(d["dataset_id"].as_str().unwrap().starts_with("dset_"));
    assert_eq!(d["tenant_id"], tenant_id.as_str());
    assert_eq!(d["name"], "AP Invoices");
    assert_eq!(d["description"], "");
    assert_eq!(d["source_modality"], "document");
    assert_eq!(d["monetization_mode"], "open");
    assert_eq!(d["pricing_model"], "fixed");
    assert_eq!(d["visibility"], "private");
    assert_eq!(d["status"], "active");
    assert_eq!(d["price_per_result"], json!(0.01));
    assert_eq!(d["currency"], "USD");
    assert_eq!(
        (
            d["object_count"].as_i64(),
            d["active_object_count"].as_i64(),
            d["storage_bytes"].as_i64()
        ),
        (Some(0), Some(0), Some(0))
    );
    assert_eq!(d["created_at"], d["updated_at"]);

    let premium = app
        .post(
            "/v1/datasets",
            Some(&token),
            json!({"name": "P", "monetization_mode": "premium"}),
        )
        .await
        .expect(201);
    assert_eq!(premium.data()["price_per_result"], json!(0.05));
    let priced = app
        .post(
            "/v1/datasets",
            Some(&token),
            json!({"name": "P", "price_per_result": "1.5"}),
        )
        .await
        .expect(201);
    assert_eq!(priced.data()["price_per_result"], json!(1.5));
    app.finish().await;
}

#[tokio::test]
async fn invalid_dataset_fields_are_named() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    let reply = app
        .post(
            "/v1/datasets",
            Some(&token),
            json!({"name": "", "source_modality": "text", "visibility": "public", "price_per_result": "0.0000001", "status": "paused"}),
        )
        .await
        .expect(422);
    let fields = reply.body["error"]["details"]["fields"]
        .as_object()
        .unwrap();
    for field in [
        "name",
        "source_modality",
        "visibility",
        "price_per_result",
        "status",
    ] {
        assert!(fields.contains_key(field), "{field} missing in {fields:?}");
    }
    let reply = app
        .post(
            "/v1/datasets",
            Some(&token),
            json!({"name": "x", "tenant_id": "tnt_x", "status": "active"}),
        )
        .await
        .expect(422);
    assert_eq!(
        reply.body["error"]["details"]["fields"]["tenant_id"],
        "unknown field"
    );
    app.post(
        "/v1/datasets",
        Some(&token),
        json!({"name": "x", "price_per_result": true}),
    )
    .await
    .expect(400);
    app.post(
        "/v1/datasets",
        Some(&token),
        json!({"name": "x", "price_per_result": 1000001}),
    )
    .await
    .expect(422);
    app.post(
        "/v1/datasets",
        Some(&token),
        json!({"name": "x", "price_per_result": -1}),
    )
    .await
    .expect(422);
    app.finish().await;
}

#[tokio::test]
async fn datasets_are_listed_newest_first_with_cursors_and_filters() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let status = if n % 2 == 0 { "active" } else { "draft" };
        ids.push(
            app.dataset(&token, json!({"name": format!("D{n}"), "status": status}))
                .await,
        );
    }
    let page = app
        .get("/v1/datasets?limit=2", Some(&token))
        .await
        .expect(200);
    let names: Vec<_> = page.data()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["dataset_id"].clone())
        .collect();
    assert_eq!(names, [json!(ids[4]), json!(ids[3])]);
    let cursor = page.data()["next_cursor"].as_str().unwrap().to_owned();
    let next = app
        .get(
            &format!("/v1/datasets?limit=2&cursor={cursor}"),
            Some(&token),
        )
        .await
        .expect(200);
    assert_eq!(next.data()["items"][0]["dataset_id"], ids[2].as_str());
    let last = app
        .get(
            &format!(
                "/v1/datasets?limit=2&cursor={}",
                next.data()["next_cursor"].as_str().unwrap()
            ),
            Some(&token),
        )
        .await
        .expect(200);
    assert_eq!(last.data()["items"].as_array().unwrap().len(), 1);
    assert_eq!(last.data()["next_cursor"], json!(null));

    let drafts = app
        .get("/v1/datasets?status=draft", Some(&token))
        .await
        .expect(200);
    assert_eq!(drafts.data()["items"].as_array().unwrap().len(), 2);
    app.get("/v1/datasets?status=deleted", Some(&token))
        .await
        .expect(422);
    app.get("/v1/datasets?limit=0", Some(&token))
        .await
        .expect(422);
    app.get("/v1/datasets?limit=101", Some(&token))
        .await
        .expect(422);
    assert_eq!(
        app.get("/v1/datasets?cursor=garbage", Some(&token))
            .await
            .expect(400)
            .code(),
        "invalid_cursor"
    );
    // A cursor from another filter set is refused.
    app.get(
        &format!("/v1/datasets?status=draft&cursor={cursor}"),
        Some(&token),
    )
    .await
    .expect(400);
    app.finish().await;
}

#[tokio::test]
async fn patch_changes_only_what_it_names() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    let id = app
        .dataset(&token, json!({"monetization_mode": "premium"}))
        .await;
    let before = app
        .get(&format!("/v1/datasets/{id}"), Some(&token))
        .await
        .expect(200);
    let same = app
        .patch(&format!("/v1/datasets/{id}"), Some(&token), json!({}))
        .await
        .expect(200);
    assert_eq!(same.data(), before.data());
    let events = table(
        &app.state,
        "SELECT COUNT(*) FROM events WHERE aggregate_type = 'dataset'",
    )
    .await;
    assert_eq!(events[0][0], "1", "an empty patch records nothing");

    let changed = app
        .patch(
            &format!("/v1/datasets/{id}"),
            Some(&token),
            json!({"monetization_mode": "open", "status": "paused", "description": "d"}),
        )
        .await
        .expect(200);
    assert_eq!(changed.data()["monetization_mode"], "open");
    assert_eq!(
        changed.data()["price_per_result"],
        json!(0.05),
        "price stays unless sent"
    );
    assert_eq!(changed.data()["status"], "paused");
    assert_ne!(changed.data()["updated_at"], before.data()["updated_at"]);
    for bad in [
        json!({"status": "suspended"}),
        json!({"status": "deleted"}),
        json!({"tenant_id": "tnt_x"}),
        json!({"name": ""}),
    ] {
        app.patch(&format!("/v1/datasets/{id}"), Some(&token), bad)
            .await
            .expect(422);
    }
    app.finish().await;
}

#[tokio::test]
async fn deleting_a_dataset_cascades_to_its_objects_and_then_hides_it() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    let id = app.dataset(&token, json!({})).await;
    let object = app.staged_object(&token, &id, b"some bytes").await;
    let reply = app
        .delete(&format!("/v1/datasets/{id}"), Some(&token))
        .await
        .expect(200);
    assert_eq!(reply.data()["status"], "pending_deletion");
    // Until the cleanup (woken at once) finishes these are 409; after it the dataset is gone (404).
    let again = app
        .delete(&format!("/v1/datasets/{id}"), Some(&token))
        .await;
    let patch = app
        .patch(
            &format!("/v1/datasets/{id}"),
            Some(&token),
            json!({"name": "n"}),
        )
        .await;
    let upload = app
        .post(
            &format!("/v1/datasets/{id}/objects/upload"),
            Some(&token),
            json!({"filename": "a", "content_type": "text/plain", "size_bytes": 1}),
        )
        .await;
    for reply in [again, patch, upload] {
        assert!(
            [409, 404].contains(&reply.status.as_u16()),
            "{}",
            reply.body
        );
        if reply.status == 409 {
            assert_eq!(reply.code(), "invalid_state");
        }
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    while app
        .get(&format!("/v1/datasets/{id}"), Some(&token))
        .await
        .status
        != 404
    {
        assert!(Instant::now() < deadline, "cleanup did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.get(&format!("/v1/objects/{object}"), Some(&token))
        .await
        .expect(404);
    assert_eq!(
        app.state.blobs.count(&object).await.unwrap(),
        0,
        "the blob was removed"
    );
    settled(&app.state).await;
    let status = table(
        &app.state,
        &format!("SELECT status FROM objects WHERE object_id = '{object}'"),
    )
    .await;
    assert_eq!(status[0][0], "deleted");
    let listed = app.get("/v1/datasets", Some(&token)).await.expect(200);
    assert!(listed.data()["items"].as_array().unwrap().is_empty());
    let log = table(
        &app.state,
        &format!("SELECT event_type FROM events WHERE aggregate_id = '{id}' ORDER BY sequence"),
    )
    .await;
    let types: Vec<&str> = log.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(
        types,
        [
            "DatasetCreated",
            "DatasetDeletionRequested",
            "DatasetDeleted"
        ]
    );
    app.finish().await;
}

#[tokio::test]
async fn another_tenant_gets_404_for_every_dataset_route() {
    let app = spawn_app().await;
    let (owner, _, _) = app.signup(&email()).await;
    let (other, _, _) = app.signup(&email()).await;
    let id = app.dataset(&owner, json!({"visibility": "listed"})).await;
    let object = app.staged_object(&owner, &id, b"private").await;
    app.get(&format!("/v1/datasets/{id}"), Some(&other))
        .await
        .expect(404);
    app.patch(
        &format!("/v1/datasets/{id}"),
        Some(&other),
        json!({"name": "x"}),
    )
    .await
    .expect(404);
    app.delete(&format!("/v1/datasets/{id}"), Some(&other))
        .await
        .expect(404);
    app.get(&format!("/v1/datasets/{id}/objects"), Some(&other))
        .await
        .expect(404);
    app.get(&format!("/v1/datasets/{id}/entitlements"), Some(&other))
        .await
        .expect(404);
    app.post(
        &format!("/v1/datasets/{id}/objects/upload"),
        Some(&other),
        json!({"filename": "a", "content_type": "text/plain", "size_bytes": 1}),
    )
    .await
    .expect(404);
    app.get(&format!("/v1/objects/{object}"), Some(&other))
        .await
        .expect(404);
    app.post(
        &format!("/v1/objects/{object}/confirm"),
        Some(&other),
        json!({}),
    )
    .await
    .expect(404);
    app.delete(&format!("/v1/objects/{object}"), Some(&other))
        .await
        .expect(404);
    app.delete(&format!("/v1/objects/{object}/upload"), Some(&other))
        .await
        .expect(404);
    app.get(&format!("/v1/objects/{object}/download"), Some(&other))
        .await
        .expect(404);
    for malformed in [
        "/v1/datasets/nope",
        "/v1/datasets/obj_00000000000000000000000000",
        "/v1/objects/dset_x",
    ] {
        app.get(malformed, Some(&owner)).await.expect(404);
    }
    // Nothing changed.
    let d = app
        .get(&format!("/v1/datasets/{id}"), Some(&owner))
        .await
        .expect(200);
    assert_eq!(d.data()["name"], "Data");
    assert_eq!(d.data()["status"], "active");
    app.finish().await;
}

#[tokio::test]
async fn the_catalog_lists_active_listed_and_restricted_datasets_of_all_tenants() {
    let app = spawn_app().await;
    let (seller, _, seller_tenant) = app.signup(&email()).await;
    let (buyer, _, buyer_tenant) = app.signup(&email()).await;
    let listed = app
        .dataset(
            &seller,
            json!({"name": "Listed invoices", "visibility": "listed"}),
        )
        .await;
    let restricted = app.dataset(&seller, json!({"name": "Restricted", "visibility": "restricted", "description": "secret Invoices"})).await;
    let _private = app.dataset(&seller, json!({"name": "Private"})).await;
    let _draft = app
        .dataset(
            &seller,
            json!({"name": "Draft", "visibility": "listed", "status": "draft"}),
        )
        .await;
    let catalog = app
        .get("/v1/catalog/datasets", Some(&buyer))
        .await
        .expect(200);
    let items = catalog.data()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["dataset_id"], restricted.as_str());
    assert_eq!(items[0]["accessible"], false);
    assert_eq!(items[0]["tenant_name"], "Test Tenant");
    assert_eq!(items[1]["dataset_id"], listed.as_str());
    assert_eq!(items[1]["accessible"], true);
    assert!(items[0].get("object_count").is_none());

    let granted = app
        .post(
            &format!("/v1/datasets/{restricted}/entitlements"),
            Some(&seller),
            json!({"tenant_id": buyer_tenant}),
        )
        .await
        .expect(201);
    assert_eq!(granted.data()["tenant_id"], buyer_tenant.as_str());
    app.post(
        &format!("/v1/datasets/{restricted}/entitlements"),
        Some(&seller),
        json!({"tenant_id": buyer_tenant}),
    )
    .await
    .expect(200);
    app.post(
        &format!("/v1/datasets/{restricted}/entitlements"),
        Some(&seller),
        json!({"tenant_id": seller_tenant}),
    )
    .await
    .expect(422);
    app.post(
        &format!("/v1/datasets/{restricted}/entitlements"),
        Some(&seller),
        json!({"tenant_id": "tnt_00000000000000000000000000"}),
    )
    .await
    .expect(404);
    let catalog = app
        .get("/v1/catalog/datasets?q=INVOICES", Some(&buyer))
        .await
        .expect(200);
    let items = catalog.data()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["accessible"], true);
    let list = app
        .get(
            &format!("/v1/datasets/{restricted}/entitlements"),
            Some(&seller),
        )
        .await
        .expect(200);
    assert_eq!(list.data()["items"].as_array().unwrap().len(), 1);
    let revoked = app
        .delete(
            &format!("/v1/datasets/{restricted}/entitlements/{buyer_tenant}"),
            Some(&seller),
        )
        .await
        .expect(200);
    assert_eq!(revoked.data()["revoked"], true);
    app.delete(
        &format!("/v1/datasets/{restricted}/entitlements/{buyer_tenant}"),
        Some(&seller),
    )
    .await
    .expect(404);
    let catalog = app
        .get("/v1/catalog/datasets?q=secret", Some(&buyer))
        .await
        .expect(200);
    assert_eq!(catalog.data()["items"][0]["accessible"], false);
    app.get(
        &format!("/v1/catalog/datasets?q={}", "x".repeat(201)),
        Some(&buyer),
    )
    .await
    .expect(422);
    app.finish().await;
}
