//! The route registry: every route is added through [`Routes`], which remembers its path as well
//! as handing it to axum, so the paths the service really serves can be listed (the OpenAPI
//! document is checked against them) without a second, hand-kept list.

use axum::routing::MethodRouter;
use axum::Router;

use crate::app::AppState;

/// An axum router that records the path of each route added to it.
#[derive(Default)]
pub struct Routes {
    router: Router<AppState>,
    paths: Vec<String>,
}

impl Routes {
    /// No routes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `path` with the handlers of `methods` (axum's `Router::route`).
    pub fn route(mut self, path: &str, methods: MethodRouter<AppState>) -> Self {
        self.router = self.router.route(path, methods);
        self.paths.push(path.to_owned());
        self
    }

    /// Adds every route of `other` (axum's `Router::merge`).
    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.paths.extend(other.paths);
        self
    }

    /// Adds every route of `other` under `prefix` (axum's `Router::nest`).
    pub fn nest(mut self, prefix: &str, other: Routes) -> Self {
        self.router = self.router.nest(prefix, other.router);
        self.paths
            .extend(other.paths.into_iter().map(|p| format!("{prefix}{p}")));
        self
    }

    /// The path templates served, in axum's `{param}` syntax, in registration order.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// The axum router.
    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}
