//! The audit tree (see `projections::audit` and [`crate::notary`]): the signed head, the kept
//! heads, inclusion and consistency proofs (platform-admin sessions), and the public key that
//! checks them (no credentials).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::InclusionProof;
use crate::error::AppError;
use crate::http::envelope::Envelope;
use crate::http::extract::{Auth, Query};
use crate::http::pagination;
use crate::notary::{PublicKey, SignedHead};
use crate::state::AppState;

/// Routes under `/v1`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(head))
        .routes(routes!(heads))
        .routes(routes!(inclusion))
        .routes(routes!(consistency))
        .routes(routes!(public_key))
}

/// A non-negative integer parameter, or 422 on it.
fn count(name: &str, raw: Option<&str>) -> Result<Option<u64>, AppError> {
    raw.map(|raw| {
        raw.parse::<u64>()
            .ok()
            .filter(|n| *n <= i64::MAX as u64)
            .ok_or_else(|| AppError::field(name, "must be an integer of at least 0"))
    })
    .transpose()
}

/// The tree size asked for (default: the whole tree), within the tree.
async fn within(state: &AppState, name: &str, raw: Option<&str>) -> Result<u64, AppError> {
    let size = projections::audit::Tree {
        db: &state.store.db,
    }
    .size()
    .await?;
    match count(name, raw)? {
        None => Ok(size),
        Some(asked) if asked <= size => Ok(asked),
        Some(_) => Err(AppError::field(
            name,
            format!("must be at most the tree's size, {size}"),
        )),
    }
}

fn hex_all(hashes: Vec<projections::merkle::Hash>) -> Vec<String> {
    hashes.into_iter().map(hex::encode).collect()
}

#[utoipa::path(
    get,
    path = "/admin/audit/head",
    summary = "The audit tree's current head, signed now (platform-admin session).",
    security(("session" = [])),
    responses((status = 200, description = "The signed tree head.", body = SignedHead))
)]
async fn head(
    State(state): State<AppState>,
    Auth(principal): Auth,
) -> Result<Envelope<SignedHead>, AppError> {
    principal.require_platform_admin()?;
    let head =
        crate::audit::current_head(&state.store.db, &state.audit_key, state.store.clock.now())
            .await?;
    Ok(Envelope::ok(head))
}

/// The parameters of the kept heads.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct HeadsQuery {
    /// Only heads of larger trees than this (default 0): the previous page's `next_after`.
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<String>,
    /// Page size, 1..=100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100)]
    limit: Option<String>,
}

/// A page of kept heads.
#[derive(Serialize, ToSchema)]
struct HeadPage {
    /// By ascending tree size.
    heads: Vec<SignedHead>,
    /// The last tree size returned, or `after` if the page is empty.
    #[schema(minimum = 0)]
    next_after: i64,
}

#[utoipa::path(
    get,
    path = "/admin/audit/heads",
    summary = "The heads kept every 10,000 events and hourly (platform-admin session).",
    security(("session" = [])),
    params(HeadsQuery),
    responses(
        (status = 200, description = "A page of heads.", body = HeadPage),
        (status = 422, description = "after or limit is invalid."),
    )
)]
async fn heads(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<HeadsQuery>,
) -> Result<Envelope<HeadPage>, AppError> {
    principal.require_platform_admin()?;
    let after = count("after", query.after.as_deref())?.unwrap_or(0) as i64;
    let limit = pagination::limit(query.limit.as_deref(), 20, 100)
        .map_err(|reason| AppError::field("limit", reason))?;
    let heads = crate::audit::kept_heads(&state.store.db, after, limit as i64).await?;
    let next_after = heads.last().map_or(after, |h| h.tree_size as i64);
    Ok(Envelope::ok(HeadPage { heads, next_after }))
}

/// The parameters of an inclusion proof.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct InclusionQuery {
    /// The event's audit position (1-based).
    #[param(value_type = i64, minimum = 1)]
    position: Option<String>,
    /// The tree the proof is for (default: the whole tree).
    #[param(value_type = Option<i64>, minimum = 1)]
    tree_size: Option<String>,
}

#[utoipa::path(
    get,
    path = "/admin/audit/proof/inclusion",
    summary = "An inclusion proof (RFC 6962 audit path) of one event (platform-admin session).",
    security(("session" = [])),
    params(InclusionQuery),
    responses(
        (status = 200, description = "The proof.", body = InclusionProof),
        (status = 422, description = "position or tree_size is missing, invalid or beyond the tree."),
    )
)]
async fn inclusion(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<InclusionQuery>,
) -> Result<Envelope<InclusionProof>, AppError> {
    principal.require_platform_admin()?;
    let tree_size = within(&state, "tree_size", query.tree_size.as_deref()).await?;
    let position = count("position", query.position.as_deref())?
        .ok_or_else(|| AppError::field("position", "is required"))?;
    if position == 0 || position > tree_size {
        return Err(AppError::field(
            "position",
            format!("must be within 1..={tree_size}"),
        ));
    }
    Ok(Envelope::ok(
        crate::audit::prove(&state.store.db, position, tree_size).await?,
    ))
}

/// The parameters of a consistency proof.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ConsistencyQuery {
    /// The older tree's size (≥ 1).
    #[param(value_type = i64, minimum = 1)]
    from: Option<String>,
    /// The newer tree's size (default: the whole tree).
    #[param(value_type = Option<i64>, minimum = 1)]
    to: Option<String>,
}

/// An RFC 6962 consistency proof: the older tree is a prefix of the newer.
#[derive(Serialize, ToSchema)]
struct ConsistencyProof {
    #[schema(minimum = 1)]
    from: u64,
    #[schema(minimum = 1)]
    to: u64,
    /// The proof's hashes, hex.
    proof: Vec<String>,
    /// The older tree's root, hex.
    from_root: String,
    /// The newer tree's root, hex.
    to_root: String,
}

#[utoipa::path(
    get,
    path = "/admin/audit/proof/consistency",
    summary = "A consistency proof between two tree sizes (platform-admin session).",
    security(("session" = [])),
    params(ConsistencyQuery),
    responses(
        (status = 200, description = "The proof.", body = ConsistencyProof),
        (status = 422, description = "from or to is missing, invalid, out of order or beyond the tree."),
    )
)]
async fn consistency(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<ConsistencyQuery>,
) -> Result<Envelope<ConsistencyProof>, AppError> {
    principal.require_platform_admin()?;
    let to = within(&state, "to", query.to.as_deref()).await?;
    let from = count("from", query.from.as_deref())?
        .ok_or_else(|| AppError::field("from", "is required"))?;
    if from == 0 || from > to {
        return Err(AppError::field("from", format!("must be within 1..={to}")));
    }
    let tree = projections::audit::Tree {
        db: &state.store.db,
    };
    Ok(Envelope::ok(ConsistencyProof {
        from,
        to,
        proof: hex_all(tree.consistency(from, to).await?),
        from_root: hex::encode(tree.root(from).await?),
        to_root: hex::encode(tree.root(to).await?),
    }))
}

#[utoipa::path(
    get,
    path = "/audit/public-key",
    summary = "The Ed25519 key that signs the audit tree's heads (no credentials).",
    security(()),
    responses((status = 200, description = "The public key.", body = PublicKey))
)]
async fn public_key(State(state): State<AppState>) -> Envelope<PublicKey> {
    Envelope::ok(state.audit_key.public())
}
