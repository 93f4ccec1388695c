//! Objects through signed URLs, upload verification, and the admin review.

use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::*;

async fn object(app: &TestApp, token: &str, id: &str) -> Value {
    app.get(&format!("/v1/objects/{id}"), Some(token))
        .await
        .expect(200)
        .data()
        .clone()
}

async fn dataset(app: &TestApp, token: &str, id: &str) -> Value {
    app.get(&format!("/v1/datasets/{id}"), Some(token))
        .await
        .expect(200)
        .data()
        .clone()
}

/// The whole flow: initiate → PUT → confirm → review → download → delete.
async fn object_flow(app: &TestApp, admin: &str) {
    let (token, _, tenant) = app.signup(&email()).await;
    let dataset_id = app.dataset(&token, json!({})).await;
    let bytes = b"The VAT dispute with Acme in March.";
    let digest = hex::encode(Sha256::digest(bytes));
    let reply = app
        .post(
            &format!("/v1/datasets/{dataset_id}/objects/upload"),
            Some(&token),
            json!({"filename": "inv-001.txt", "content_type": "text/plain", "size_bytes": bytes.len(),
                   "checksum_sha256": digest.to_uppercase(), "metadata": {"lang": "en"}}),
        )
        .await
        .expect(201);
    let data = reply.data().clone();
    assert_eq!(data["upload_method"], "PUT");
    assert_eq!(data["upload_headers"], json!({}));
    let id = data["object_id"].as_str().unwrap().to_owned();
    let pending = object(app, &token, &id).await;
    assert_eq!(pending["status"], "pending_upload");
    assert_eq!(pending["review_state"], json!(null));
    assert_eq!(pending["checksum_sha256"], json!(null));
    assert_eq!(pending["metadata"], json!({"lang": "en"}));

    let confirm = format!("/v1/objects/{id}/confirm");
    assert_eq!(
        app.post(&confirm, Some(&token), json!({}))
            .await
            .expect(409)
            .code(),
        "upload_incomplete"
    );
    let put = app
        .put_bytes(data["upload_url"].as_str().unwrap(), bytes)
        .await;
    assert!(put.status.is_success(), "{}", put.status);
    let staged = app
        .post(&confirm, Some(&token), json!({}))
        .await
        .expect(200);
    let staged = staged.data().clone();
    assert_eq!(staged["status"], "staged");
    assert_eq!(staged["review_state"], "staged");
    assert_eq!(staged["checksum_sha256"], digest.as_str());
    let uploaded = aggregates::timestamp::parse(staged["uploaded_at"].as_str().unwrap()).unwrap();
    let expires =
        aggregates::timestamp::parse(staged["review_expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires - uploaded, chrono::Duration::days(7));
    // A retried confirm answers the same object.
    assert_eq!(
        app.post(&confirm, Some(&token), json!({}))
            .await
            .expect(200)
            .data(),
        &staged
    );
    let counters = dataset(app, &token, &dataset_id).await;
    assert_eq!(
        (
            counters["object_count"].as_i64(),
            counters["active_object_count"].as_i64()
        ),
        (Some(1), Some(0))
    );
    assert_eq!(counters["storage_bytes"].as_i64(), Some(bytes.len() as i64));

    // The review queue shows it; the admin approves.
    let queue = app
        .get(
            &format!("/v1/admin/review/queue?tenant_id={tenant}"),
            Some(admin),
        )
        .await
        .expect(200);
    assert_eq!(queue.data()["total"], 1);
    assert_eq!(queue.data()["items"][0]["object_id"], id.as_str());
    let preview = app
        .get(
            &format!("/v1/admin/review/objects/{tenant}/{id}/preview"),
            Some(admin),
        )
        .await
        .expect(200);
    let previewed = app
        .client
        .get(preview.data()["preview_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(previewed.bytes().await.unwrap().as_ref(), bytes);
    let approved = app
        .post(
            &format!("/v1/admin/review/objects/{tenant}/{id}/approve"),
            Some(admin),
            json!({"note": "fine"}),
        )
        .await
        .expect(200);
    assert_eq!(approved.data()["status"], "approved");
    assert!(approved.data()["reviewed_at"].is_string());
    let counters = dataset(app, &token, &dataset_id).await;
    assert_eq!(counters["active_object_count"].as_i64(), Some(1));

    // Download through the signed URL, whole and by range.
    let download = app
        .get(&format!("/v1/objects/{id}/download"), Some(&token))
        .await
        .expect(200);
    assert_eq!(download.data()["charged_amount"], json!(0));
    assert_eq!(download.data()["access_id"], json!(null));
    let url = download.data()["download_url"].as_str().unwrap().to_owned();
    let whole = app.client.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.bytes().await.unwrap().as_ref(), bytes);
    let ranged = app
        .client
        .get(&url)
        .header("range", "bytes=4-6")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await.unwrap().as_ref(), b"VAT");

    // Delete: the blob goes, counters drop, the object reads as deleted.
    let deleted = app
        .delete(&format!("/v1/objects/{id}"), Some(&token))
        .await
        .expect(200);
    assert_eq!(deleted.data()["status"], "deleted");
    assert_eq!(deleted.data()["review_state"], "approved");
    assert_eq!(app.state.blobs.count(&id).await.unwrap(), 0);
    let counters = dataset(app, &token, &dataset_id).await;
    assert_eq!(
        (
            counters["object_count"].as_i64(),
            counters["storage_bytes"].as_i64()
        ),
        (Some(0), Some(0))
    );
    assert_eq!(
        app.delete(&format!("/v1/objects/{id}"), Some(&token))
            .await
            .expect(409)
            .code(),
        "invalid_state"
    );
    let listed = app
        .get(&format!("/v1/datasets/{dataset_id}/objects"), Some(&token))
        .await
        .expect(200);
    assert!(listed.data()["items"].as_array().unwrap().is_empty());
    let listed = app
        .get(
            &format!("/v1/datasets/{dataset_id}/objects?status=deleted"),
            Some(&token),
        )
        .await
        .expect(200);
    assert_eq!(listed.data()["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_object_flow_works_on_the_local_store() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    object_flow(&app, &admin).await;
    app.finish().await;
}

#[tokio::test]
async fn the_object_flow_works_on_an_s3_store() {
    let fresh = fresh().await;
    let Some(config) = s3_config(&fresh) else {
        eprintln!("IPTO_TEST_S3_BUCKET not set: S3 flow skipped");
        return;
    };
    let (app, admin) = spawn_with_admin(config).await;
    assert_eq!(app.state.blobs.kind(), "s3");
    object_flow(&app, &admin).await;
    app.finish().await;
}

#[tokio::test]
async fn uploads_are_verified_before_confirmation() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    let dataset_id = app.dataset(&token, json!({})).await;

    // Wrong length: 422, the blob is discarded and the object stays pending.
    let (id, url) = app.initiate(&token, &dataset_id, b"12345").await;
    app.put_bytes(&url, b"123").await.expect(200);
    let reply = app
        .post(
            &format!("/v1/objects/{id}/confirm"),
            Some(&token),
            json!({}),
        )
        .await
        .expect(422);
    assert_eq!(reply.code(), "size_mismatch");
    assert_eq!(
        reply.body["error"]["details"],
        json!({"expected": 5, "actual": 3})
    );
    assert_eq!(object(&app, &token, &id).await["status"], "pending_upload");
    assert_eq!(app.state.blobs.count(&id).await.unwrap(), 0);
    // A corrected upload then confirms.
    app.put_bytes(&url, b"12345").await.expect(200);
    app.post(
        &format!("/v1/objects/{id}/confirm"),
        Some(&token),
        json!({}),
    )
    .await
    .expect(200);

    // Wrong checksum: 422 with both digests.
    let reply = app
        .post(
            &format!("/v1/datasets/{dataset_id}/objects/upload"),
            Some(&token),
            json!({"filename": "a.txt", "content_type": "text/plain", "size_bytes": 3, "checksum_sha256": "0".repeat(64)}),
        )
        .await
        .expect(201);
    let id = reply.data()["object_id"].as_str().unwrap().to_owned();
    app.put_bytes(reply.data()["upload_url"].as_str().unwrap(), b"abc")
        .await
        .expect(200);
    let reply = app
        .post(
            &format!("/v1/objects/{id}/confirm"),
            Some(&token),
            json!({}),
        )
        .await
        .expect(422);
    assert_eq!(reply.code(), "checksum_mismatch");
    assert_eq!(
        reply.body["error"]["details"]["actual"],
        hex::encode(Sha256::digest(b"abc"))
    );
    assert_eq!(object(&app, &token, &id).await["status"], "pending_upload");
    app.finish().await;
}

#[tokio::test]
async fn signed_upload_urls_refuse_tampering_overflow_and_late_uploads() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    let dataset_id = app.dataset(&token, json!({})).await;
    let (id, url) = app.initiate(&token, &dataset_id, b"12345").await;

    let tampered = url.replace("signature=", "signature=00");
    assert_eq!(
        app.put_bytes(&tampered, b"12345").await.expect(403).code(),
        "forbidden"
    );
    let later = url.replace("expires=", "expires=9");
    app.put_bytes(&later, b"12345").await.expect(403);
    let as_get = app.client.get(&url).send().await.unwrap();
    assert_eq!(as_get.status(), 403, "a PUT signature does not allow GET");
    let unsigned = url.split('?').next().unwrap().to_owned();
    app.put_bytes(&unsigned, b"12345").await.expect(403);
    assert_eq!(
        app.state.blobs.count(&id).await.unwrap(),
        0,
        "nothing was stored"
    );

    let overflow = app.put_bytes(&url, b"123456").await.expect(413);
    assert_eq!(overflow.code(), "payload_too_large");
    assert_eq!(
        app.state.blobs.count(&id).await.unwrap(),
        0,
        "a refused upload leaves nothing"
    );

    app.put_bytes(&url, b"12345").await.expect(200);
    app.post(
        &format!("/v1/objects/{id}/confirm"),
        Some(&token),
        json!({}),
    )
    .await
    .expect(200);
    assert_eq!(
        app.put_bytes(&url, b"54321").await.expect(409).code(),
        "invalid_state"
    );
    app.finish().await;
}

#[tokio::test]
async fn object_fields_are_validated() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    let dataset_id = app.dataset(&token, json!({})).await;
    let path = format!("/v1/datasets/{dataset_id}/objects/upload");
    let reply = app
        .post(&path, Some(&token), json!({"filename": "../x", "content_type": "text", "size_bytes": 0, "checksum_sha256": "xyz"}))
        .await
        .expect(422);
    let fields = reply.body["error"]["details"]["fields"]
        .as_object()
        .unwrap();
    for field in ["filename", "content_type", "size_bytes", "checksum_sha256"] {
        assert!(fields.contains_key(field), "{field}: {fields:?}");
    }
    let reply = app
        .post(
            &path,
            Some(&token),
            json!({"filename": "a", "content_type": "text/plain", "size_bytes": 5368709121u64}),
        )
        .await
        .expect(422);
    assert!(reply.body["error"]["details"]["fields"]
        .get("size_bytes")
        .is_some());
    app.post(
        &path,
        Some(&token),
        json!({"filename": "a", "content_type": "text/plain", "size_bytes": "10"}),
    )
    .await
    .expect(400);
    app.post(&path, Some(&token), json!({"filename": "a", "content_type": "text/plain", "size_bytes": 1, "metadata": {"n": 1}}))
        .await
        .expect(400);
    let long = app
        .post(&path, Some(&token), json!({"filename": "a", "content_type": "text/plain", "size_bytes": 1, "metadata": {"lang": "x".repeat(1025)}}))
        .await
        .expect(422);
    assert!(long.body["error"]["details"]["fields"]
        .get("metadata.lang")
        .is_some());
    app.finish().await;
}

#[tokio::test]
async fn a_pending_upload_can_be_cancelled_once() {
    let app = spawn_app().await;
    let (token, _, _) = app.signup(&email()).await;
    let dataset_id = app.dataset(&token, json!({})).await;
    let (id, url) = app.initiate(&token, &dataset_id, b"abc").await;
    app.put_bytes(&url, b"abc").await.expect(200);
    let cancelled = app
        .delete(&format!("/v1/objects/{id}/upload"), Some(&token))
        .await
        .expect(200);
    assert_eq!(cancelled.data()["status"], "cancelled");
    assert_eq!(app.state.blobs.count(&id).await.unwrap(), 0);
    assert_eq!(
        app.delete(&format!("/v1/objects/{id}/upload"), Some(&token))
            .await
            .expect(409)
            .code(),
        "invalid_state"
    );
    app.post(
        &format!("/v1/objects/{id}/confirm"),
        Some(&token),
        json!({}),
    )
    .await
    .expect(409);
    app.finish().await;
}

#[tokio::test]
async fn review_routes_are_for_platform_admin_sessions_only() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (token, _, tenant) = app.signup(&email()).await;
    let dataset_id = app.dataset(&token, json!({})).await;
    let id = app.staged_object(&token, &dataset_id, b"x").await;
    for path in [
        "/v1/admin/review/queue".to_owned(),
        format!("/v1/admin/review/objects/{tenant}/{id}"),
    ] {
        assert_eq!(
            app.get(&path, Some(&token)).await.expect(403).code(),
            "forbidden"
        );
        app.get(&path, None).await.expect(401);
    }
    app.post(
        &format!("/v1/admin/review/objects/{tenant}/{id}/approve"),
        Some(&token),
        json!({}),
    )
    .await
    .expect(403);
    // A tenant that does not own the object is 404.
    let (_, _, other_tenant) = app.signup(&email()).await;
    app.get(
        &format!("/v1/admin/review/objects/{other_tenant}/{id}"),
        Some(&admin),
    )
    .await
    .expect(404);

    let reject = format!("/v1/admin/review/objects/{tenant}/{id}/reject");
    app.post(&reject, Some(&admin), json!({})).await.expect(422);
    app.post(&reject, Some(&admin), json!({"reason": "   "}))
        .await
        .expect(422);
    let rejected = app
        .post(&reject, Some(&admin), json!({"reason": " blurry "}))
        .await
        .expect(200);
    assert_eq!(rejected.data()["rejection_reason"], "blurry");
    assert_eq!(
        app.post(&reject, Some(&admin), json!({"reason": "again"}))
            .await
            .expect(409)
            .code(),
        "invalid_state"
    );
    let detail = app
        .get(
            &format!("/v1/admin/review/objects/{tenant}/{id}"),
            Some(&admin),
        )
        .await
        .expect(200);
    let history: Vec<_> = detail.data()["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["type"].clone())
        .collect();
    assert_eq!(
        history,
        [
            json!("ObjectUploadInitiated"),
            json!("ObjectUploadConfirmed"),
            json!("ObjectRejected")
        ]
    );
    assert!(detail.data()["history"][2]["actor"]
        .as_str()
        .unwrap()
        .starts_with("usr_"));
    assert_eq!(detail.data()["status"], "rejected");
    let queue = app
        .get("/v1/admin/review/queue", Some(&admin))
        .await
        .expect(200);
    assert_eq!(queue.data()["total"], 0);
    app.finish().await;
}

#[tokio::test]
async fn the_review_queue_is_oldest_first_with_filters_and_total() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (token, _, tenant) = app.signup(&email()).await;
    let first = app.dataset(&token, json!({"name": "First"})).await;
    let second = app.dataset(&token, json!({"name": "Second"})).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            app.staged_object(&token, if n == 1 { &second } else { &first }, b"q")
                .await,
        );
    }
    let page = app
        .get("/v1/admin/review/queue?limit=2", Some(&admin))
        .await
        .expect(200);
    assert_eq!(page.data()["total"], 3);
    let got: Vec<_> = page.data()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["object_id"].clone())
        .collect();
    assert_eq!(got, [json!(ids[0]), json!(ids[1])]);
    assert_eq!(page.data()["items"][0]["dataset_name"], "First");
    assert_eq!(page.data()["items"][0]["tenant_name"], "Test Tenant");
    let next = app
        .get(
            &format!(
                "/v1/admin/review/queue?limit=2&cursor={}",
                page.data()["next_cursor"].as_str().unwrap()
            ),
            Some(&admin),
        )
        .await
        .expect(200);
    assert_eq!(next.data()["items"][0]["object_id"], ids[2].as_str());
    let filtered = app
        .get(
            &format!("/v1/admin/review/queue?dataset_id={second}&tenant_id={tenant}"),
            Some(&admin),
        )
        .await
        .expect(200);
    assert_eq!(filtered.data()["total"], 1);
    app.finish().await;
}

#[tokio::test]
async fn of_ten_concurrent_approvals_exactly_one_wins() {
    let fresh = fresh().await;
    let (app, admin) = spawn_with_admin(config(&fresh)).await;
    let (token, _, tenant) = app.signup(&email()).await;
    let dataset_id = app.dataset(&token, json!({})).await;
    let id = app.staged_object(&token, &dataset_id, b"race").await;
    let path = format!("/v1/admin/review/objects/{tenant}/{id}/approve");
    let attempts = (0..10).map(|_| app.post(&path, Some(&admin), json!({})));
    let replies = futures::future::join_all(attempts).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 409),
        "{statuses:?}"
    );
    let approvals = table(&app.state, &format!("SELECT COUNT(*) FROM events WHERE aggregate_id = '{id}' AND event_type = 'ObjectApproved'")).await;
    assert_eq!(approvals[0][0], "1");
    app.finish().await;
}

#[tokio::test]
async fn staged_objects_past_their_review_window_are_rejected_as_review_expired() {
    let fresh = fresh().await;
    let mut now = config(&fresh);
    now.session_ttl_seconds = 30 * 86_400;
    let app = spawn_with(now.clone()).await;
    let (token, _, _) = app.signup(&email()).await;
    let dataset_id = app.dataset(&token, json!({})).await;
    let id = app.staged_object(&token, &dataset_id, b"late").await;
    app.stop().await;

    let mut later = now;
    later.clock_offset_seconds = 8 * 86_400;
    let app = spawn_with(later).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let current = object(&app, &token, &id).await;
        if current["status"] == "rejected" {
            assert_eq!(current["rejection_reason"], "review_expired");
            assert!(current["reviewed_at"].is_string());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not expired: {current}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let actor = table(&app.state, &format!("SELECT CAST(metadata AS TEXT) FROM events WHERE aggregate_id = '{id}' AND event_type = 'ObjectRejected'")).await;
    assert!(actor[0][0].contains("\"system\""), "{}", actor[0][0]);
    app.finish().await;
}

#[tokio::test]
async fn an_expired_upload_url_is_refused() {
    let fresh = fresh().await;
    let mut now = config(&fresh);
    now.session_ttl_seconds = 30 * 86_400;
    let app = spawn_with(now.clone()).await;
    let (token, _, _) = app.signup(&email()).await;
    let dataset_id = app.dataset(&token, json!({})).await;
    let (id, url) = app.initiate(&token, &dataset_id, b"late").await;
    app.stop().await;

    // Two hours later the one-hour URL no longer works, and nothing is stored.
    let mut later = now;
    later.clock_offset_seconds = 2 * 3600;
    let app = spawn_with(later).await;
    let port_fixed = url.replacen(url.split("/storage/").next().unwrap(), &app.address, 1);
    assert_eq!(
        app.put_bytes(&port_fixed, b"late").await.expect(403).code(),
        "forbidden"
    );
    assert_eq!(app.state.blobs.count(&id).await.unwrap(), 0);
    app.finish().await;
}
