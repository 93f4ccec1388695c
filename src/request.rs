//! The request being served, as a task-local scope: its id, the route it matched, the rate-limit
//! bucket that applied, the scopes its handler required, and the last log position it wrote (its
//! response waits for the projections to pass it).

use std::sync::Mutex;

use projections::LogPosition;

tokio::task_local! {
    /// The HTTP request being served: its id, and the last log position it wrote.
    pub static REQUEST: RequestScope;
}

/// Per-request context carried in a task-local.
#[derive(Debug, Default)]
pub struct RequestScope {
    pub request_id: String,
    /// The rate-limit bucket that applied, for the `RateLimit` headers.
    pub quota: Mutex<Option<crate::ratelimit::Quota>>,
    written: Mutex<Option<Written>>,
    route: Mutex<Option<String>>,
    /// The tenant of the authenticated principal, for the request's log line.
    tenant: Mutex<Option<String>>,
    /// The scopes the handler required of the principal (a replay must still hold them).
    required: Mutex<Vec<aggregates::Scope>>,
    /// When the client must have sent the whole request body.
    pub body_deadline: Option<tokio::time::Instant>,
}

impl RequestScope {
    /// A scope for one request.
    pub fn new(request_id: String) -> Self {
        Self {
            request_id,
            quota: Mutex::new(None),
            written: Mutex::new(None),
            route: Mutex::new(None),
            tenant: Mutex::new(None),
            required: Mutex::new(Vec::new()),
            body_deadline: None,
        }
    }

    /// The same scope, with a deadline for the request body.
    pub fn with_body_deadline(mut self, deadline: tokio::time::Instant) -> Self {
        self.body_deadline = Some(deadline);
        self
    }

    /// Records a scope the handler required (and the principal held).
    pub fn require(&self, scope: aggregates::Scope) {
        let mut required = self.required.lock().expect("lock poisoned");
        if !required.contains(&scope) {
            required.push(scope);
        }
    }

    /// The scopes the handler required.
    pub fn required(&self) -> Vec<aggregates::Scope> {
        self.required.lock().expect("lock poisoned").clone()
    }

    /// The matched route template, once routing ran.
    pub fn route(&self) -> Option<String> {
        self.route.lock().expect("lock poisoned").clone()
    }

    /// Records the matched route template.
    pub fn set_route(&self, route: String) {
        *self.route.lock().expect("lock poisoned") = Some(route);
    }

    /// The authenticated principal's tenant, once known.
    pub fn tenant(&self) -> Option<String> {
        self.tenant.lock().expect("lock poisoned").clone()
    }

    /// Records the authenticated principal's tenant.
    pub fn set_tenant(&self, tenant: &str) {
        *self.tenant.lock().expect("lock poisoned") = Some(tenant.to_owned());
    }

    /// What this request wrote (or answered from), if anything.
    pub fn written(&self) -> Option<Written> {
        self.written.lock().expect("lock poisoned").clone()
    }

    /// Records that this request wrote (or answered from) `at`, in `aggregate_type`.
    pub fn record(&self, at: LogPosition, aggregate_type: &'static str) {
        let mut written = self.written.lock().expect("lock poisoned");
        let written = written.get_or_insert_with(|| Written {
            position: at,
            aggregate_types: Vec::new(),
        });
        written.position = written.position.max(at);
        if !written.aggregate_types.contains(&aggregate_type) {
            written.aggregate_types.push(aggregate_type);
        }
    }
}

/// The furthest log position a request wrote and the aggregate types it wrote: its response
/// waits for the projections that read those types to pass that position.
#[derive(Clone, Debug)]
pub struct Written {
    pub position: LogPosition,
    pub aggregate_types: Vec<&'static str>,
}

/// The current request's id, if running inside one.
pub fn current_request_id() -> Option<String> {
    REQUEST.try_with(|r| r.request_id.clone()).ok()
}
