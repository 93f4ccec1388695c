//! `/mcp`: the MCP tools ([`crate::client::mcp`]) over streamable HTTP, for remote agents. A request is
//! authenticated by its API key before MCP sees it: no key, a bad one or a session token is the
//! SPEC's 401 (the tools act for keys), and each request takes one from the key's rate-limit
//! bucket. The tools then call this instance's own API with that key, so its scopes, grants and
//! metering bound what they do.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::client::api::Api;
use crate::client::mcp::Caller;
use crate::client::profile::Credential;
use crate::error::AppError;
use crate::state::AppState;

/// Where the tools are served.
pub const PATH: &str = "/mcp";

/// The largest MCP request: an upload's bytes travel in it, base64-encoded.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// What the authenticating layer needs: the state, and a client of this instance's API.
#[derive(Clone)]
struct Mount {
    state: AppState,
    api: Api,
}

/// The `/mcp` route, its tools calling the API at `address` (this instance's listener).
pub fn routes(state: &AppState, address: SocketAddr) -> Router<AppState> {
    let api = Api::new(&loopback(address), None).expect("an HTTP client without TLS roots");
    let mount = Mount {
        state: state.clone(),
        api,
    };
    // POST only: the transport is stateless, so there is no stream to GET and no session to
    // DELETE (other methods are 405 with `Allow: POST`, before any credential check).
    let service = axum::routing::post_service(crate::client::mcp::http_service(MAX_BODY_BYTES))
        .route_layer(axum::middleware::from_fn_with_state(mount, authenticate));
    Router::new().route(PATH, service)
}

/// The listener's address as this machine reaches it (`0.0.0.0` is no destination).
fn loopback(address: SocketAddr) -> String {
    let mut address = address;
    if address.ip().is_unspecified() {
        let ip = match address {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        };
        address.set_ip(ip);
    }
    format!("http://{address}")
}

/// 401 unless the request carries a valid API key (then rate limited as any API call); the
/// key's client goes to the tools as [`Caller`].
async fn authenticate(State(mount): State<Mount>, mut request: Request, next: Next) -> Response {
    let Some(key) = api_key(request.headers()) else {
        return AppError::Unauthorized.into_response();
    };
    if let Err(error) =
        crate::http::extract::authenticate(request.headers(), request.extensions(), &mount.state)
            .await
    {
        return error.into_response();
    }
    let caller = Caller(mount.api.with_credential(Credential::ApiKey(key)));
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The request's API key (`Authorization: Bearer ipto_…` or `X-API-Key`), if it has one.
fn api_key(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token);
    let header = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    bearer
        .or(header)
        .map(str::trim)
        .filter(|key| key.starts_with("ipto_"))
        .map(str::to_owned)
}
