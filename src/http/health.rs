//! `GET /health`: the store, and each projection's position, lag and state.

use std::collections::BTreeMap;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::AppError;
use crate::http::envelope::Envelope;
use crate::state::AppState;

/// A projection lagging by more than this many events makes the service `degraded`.
pub const LAG_THRESHOLD: i64 = 1000;

/// Routes outside `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(metrics))
}

/// The service's health.
#[derive(Serialize, ToSchema)]
struct Health {
    /// `ok`, or `degraded` when a projection lags by more than 1000 events or has stopped.
    #[schema(pattern = "^(ok|degraded)$")]
    status: &'static str,
    /// The service version.
    version: &'static str,
    /// `sqlite` or `postgres`.
    #[schema(pattern = "^(sqlite|postgres)$")]
    store: &'static str,
    /// Each projection by name, as `ipto projections status` lists them.
    projections: BTreeMap<String, ProjectionHealth>,
    /// The audit order (`GET /v1/admin/events`), in its own numbering.
    audit: AuditHealth,
    /// The shared read models' current or last online rebuild (`ipto projections rebuild`, or a
    /// new projection version), whichever instance runs it; absent if none ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    rebuild: Option<projections::RebuildProgress>,
}

/// The audit order's end. Audit positions are dense (1, 2, 3, …) and are not the store's global
/// positions that `projections.*.position` counts in: on PostgreSQL the two differ.
#[derive(Serialize, ToSchema)]
struct AuditHealth {
    /// The last audit position numbered: the audit tree's size.
    #[schema(minimum = 0)]
    audit_position: i64,
}

/// One projection's progress.
#[derive(Serialize, ToSchema)]
struct ProjectionHealth {
    /// The last global position applied (the store's numbering; not an audit position).
    position: i64,
    /// The log's head global position minus `position`.
    #[schema(minimum = 0)]
    lag: i64,
    /// The worker's state: `ok`, `failed`, or `rebuilding` (a new version being rebuilt while
    /// the previous one serves; the search index: being rebuilt while the live one serves).
    #[schema(pattern = "^(ok|failed|rebuilding)$")]
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    failed_position: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The search index only: PDFs indexed by filename and metadata alone since this instance
    /// started, because their text extraction ran past its time or memory limit or crashed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pdf_extraction: Option<PdfExtractionHealth>,
    /// The search index only, with an embedder: the dense leg's lag.
    #[serde(skip_serializing_if = "Option::is_none")]
    dense: Option<DenseHealth>,
    /// The search index only: this instance's rebuild under way.
    #[serde(skip_serializing_if = "Option::is_none")]
    rebuild: Option<projections::RebuildProgress>,
}

/// The dense leg: passages embedded and still waiting (served by the lexical leg meanwhile).
#[derive(Serialize, ToSchema)]
struct DenseHealth {
    /// Passages with vectors.
    #[schema(minimum = 0)]
    embedded_passages: u64,
    /// Passages of approved objects not yet embedded.
    #[schema(minimum = 0)]
    pending_passages: u64,
    /// Approved objects not yet embedded.
    #[schema(minimum = 0)]
    pending_objects: u64,
    /// Passages per second over the last batch.
    #[schema(minimum = 0)]
    passages_per_second: f64,
    /// Objects set aside since start because their passages could not be embedded (logged;
    /// tried again at the next start; the lexical leg serves them).
    #[schema(minimum = 0)]
    set_aside_objects: u64,
    /// Why the last batch failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// PDFs whose text extraction failed (which ones is logged: this report is public).
#[derive(Serialize, ToSchema)]
struct PdfExtractionHealth {
    /// How many since this instance started.
    #[schema(minimum = 0)]
    failed: u64,
    /// How many by reason: `timeout`, `memory`, `crashed` or `unavailable` (the extractor could
    /// not start).
    by_reason: std::collections::BTreeMap<String, u64>,
}

impl From<&crate::search::indexer::PdfFailures> for PdfExtractionHealth {
    fn from(failures: &crate::search::indexer::PdfFailures) -> Self {
        Self {
            failed: failures.total(),
            by_reason: failures
                .by_reason
                .iter()
                .map(|(reason, n)| ((*reason).to_owned(), *n))
                .collect(),
        }
    }
}

#[utoipa::path(
    get,
    path = "/health",
    security(()),
    summary = "The store and each projection's position, lag and state (SPEC §3.9).",
    responses(
        (status = 200, description = "The service answers.", body = Health),
        (status = 503, description = "The database is unreachable."),
    )
)]
async fn health(State(state): State<AppState>) -> Result<Envelope<Health>, AppError> {
    let report = tokio::time::timeout(Duration::from_secs(3), projection_report(&state))
        .await
        .map_err(|_| AppError::Unavailable("health check timed out".into()))?
        .map_err(|e| AppError::Unavailable(e.to_string()))?;
    Ok(Envelope::ok(report))
}

async fn projection_report(state: &AppState) -> Result<Health, sqlx::Error> {
    let head = projections::log::head(&state.store.db).await?;
    let audit_position = projections::audit::Tree {
        db: &state.store.db,
    }
    .size()
    .await? as i64;
    let mut degraded = false;
    let mut projections = BTreeMap::new();
    let rebuilding = state.store.engine.rebuilding();
    for status in state.store.engine.statuses().await? {
        let lag = (head - status.position).max(0);
        degraded |= lag > LAG_THRESHOLD || status.error.is_some();
        projections.insert(
            status.name.clone(),
            ProjectionHealth {
                position: status.position,
                lag,
                state: if rebuilding.contains(&status.name.as_str()) {
                    "rebuilding"
                } else {
                    status.state()
                },
                failed_position: status.failed_position,
                error: status.error,
                pdf_extraction: None,
                dense: None,
                rebuild: None,
            },
        );
    }
    let index = state.search.status();
    let lag = (head - index.position).max(0);
    degraded |= lag > LAG_THRESHOLD || index.error.is_some();
    projections.insert(
        crate::search::NAME.to_owned(),
        ProjectionHealth {
            position: index.position,
            lag,
            state: match (&index.error, index.rebuilding) {
                (Some(_), _) => "failed",
                (None, Some(_)) => "rebuilding",
                (None, None) => "ok",
            },
            rebuild: index.rebuilding.map(local_rebuild),
            failed_position: None,
            pdf_extraction: Some(PdfExtractionHealth::from(&index.pdf_failures)),
            dense: state.search.dense.as_ref().map(|worker| {
                let progress = state.search.index.dense_progress();
                let status = worker.status();
                DenseHealth {
                    embedded_passages: progress.embedded_passages,
                    pending_passages: progress.pending_passages,
                    pending_objects: progress.pending_objects,
                    passages_per_second: (status.passages_per_second * 10.0).round() / 10.0,
                    set_aside_objects: status.set_aside,
                    error: status.error,
                }
            }),
            error: index.error,
        },
    );
    Ok(Health {
        status: if degraded { "degraded" } else { "ok" },
        version: env!("CARGO_PKG_VERSION"),
        store: state.store.db.dialect.as_str(),
        projections,
        audit: AuditHealth { audit_position },
        rebuild: state.store.engine.rebuild_progress().await?,
    })
}

fn local_rebuild(rebuild: crate::search::indexer::LocalRebuild) -> projections::RebuildProgress {
    projections::RebuildProgress::local(
        crate::search::NAME,
        rebuild.done,
        rebuild.total,
        rebuild.seconds,
    )
}

#[utoipa::path(
    get,
    path = "/metrics",
    security(()),
    summary = "Prometheus metrics (SPEC §3.15).",
    responses(
        (status = 200, description = "Prometheus text exposition.",
         content_type = "text/plain; version=0.0.4", body = String),
    )
)]
async fn metrics(State(state): State<AppState>) -> Result<axum::response::Response, AppError> {
    use axum::response::IntoResponse;
    let head = projections::log::head(&state.store.db).await?;
    let positions: Vec<(String, i64)> = state
        .store
        .engine
        .statuses()
        .await?
        .into_iter()
        .map(|s| (s.name, s.position))
        .chain([(
            crate::search::NAME.to_owned(),
            state.search.status().position,
        )])
        .collect();
    let documents = state.search.index.document_count();
    let audit_position = projections::audit::Tree {
        db: &state.store.db,
    }
    .size()
    .await?;
    let mut body = state.store.metrics.render(head, &positions, documents);
    body.push_str(&format!(
        "# HELP ipto_audit_position The last audit position numbered (the audit tree's size); audit positions are not global positions.\n# TYPE ipto_audit_position gauge\nipto_audit_position {audit_position}\n"
    ));
    body.push_str("# HELP ipto_search_pdf_extraction_failures_total PDFs indexed without their text since start: extraction past its time or memory limit, or crashed.\n# TYPE ipto_search_pdf_extraction_failures_total counter\n");
    let failures = state.search.status().pdf_failures;
    for reason in crate::search::extract::PdfFailure::REASONS {
        let n = failures.by_reason.get(reason).copied().unwrap_or(0);
        body.push_str(&format!(
            "ipto_search_pdf_extraction_failures_total{{reason=\"{reason}\"}} {n}\n"
        ));
    }
    // The shared read models' rebuild and this instance's index rebuild, labelled `rebuild`.
    let rebuilds: Vec<(&str, projections::RebuildProgress)> = [
        state
            .store
            .engine
            .rebuild_progress()
            .await?
            .map(|r| ("read_models", r)),
        state
            .search
            .status()
            .rebuilding
            .map(|r| (crate::search::NAME, local_rebuild(r))),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let Some((_, first)) = rebuilds.first() {
        for (i, (name, help, _)) in first.gauges().into_iter().enumerate() {
            body.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
            for (label, rebuild) in &rebuilds {
                let value = rebuild.gauges()[i].2;
                body.push_str(&format!("{name}{{rebuild=\"{label}\"}} {value}\n"));
            }
        }
    }
    if state.search.dense.is_some() {
        let dense = state.search.index.dense_progress();
        for (name, help, value) in [
            ("ipto_search_dense_passages", "Passages with vectors in the index.", dense.embedded_passages),
            ("ipto_search_dense_pending_passages", "Passages of approved objects not yet embedded (served by the lexical leg meanwhile).", dense.pending_passages),
            ("ipto_search_dense_pending_objects", "Approved objects not yet embedded.", dense.pending_objects),
            ("ipto_search_dense_vector_bytes", "Memory the passage vectors take.", dense.vector_bytes),
        ] {
            body.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"));
        }
    }
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response())
}
