//! Prometheus metrics in a `prometheus-client` registry, served in the text format 0.0.4: HTTP
//! requests and latency by route and status, commands by aggregate and outcome, events appended,
//! and the log head, each projection's position and lag and the search index's size (gauges set
//! from their sources at scrape time).

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A served route: the method and the matched path template.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

/// A served route and the status it answered with.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    #[prometheus(flatten)]
    route: RouteLabels,
    status: u16,
}

/// A command's aggregate and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommandLabels {
    aggregate: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectionLabels {
    projection: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The process's metrics: the registry and a handle on each family in it.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    commands: Family<CommandLabels, Counter>,
    events: Counter,
    head: Gauge,
    positions: Family<ProjectionLabels, Gauge>,
    lag: Family<ProjectionLabels, Gauge>,
    index_documents: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Self {
            registry: Registry::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            commands: Family::default(),
            events: Counter::default(),
            head: Gauge::default(),
            positions: Family::default(),
            lag: Family::default(),
            index_documents: Gauge::default(),
        };
        metrics.registered()
    }
}

impl Metrics {
    /// The same handles, each registered under its name and help text, in the order they are
    /// served. The registry appends the full stop to a help text, and `_total` to a counter's name.
    fn registered(mut self) -> Self {
        let registry = &mut self.registry;
        registry.register(
            "ipto_http_requests",
            "HTTP requests served",
            self.requests.clone(),
        );
        registry.register(
            "ipto_http_request_duration_seconds",
            "HTTP request latency",
            self.latency.clone(),
        );
        registry.register(
            "ipto_commands",
            "Commands executed, by aggregate and outcome",
            self.commands.clone(),
        );
        registry.register(
            "ipto_events_appended",
            "Events appended by this process",
            self.events.clone(),
        );
        registry.register(
            "ipto_event_log_head",
            "Highest global position in the log",
            self.head.clone(),
        );
        registry.register(
            "ipto_projection_position",
            "Highest position a projection applied",
            self.positions.clone(),
        );
        registry.register(
            "ipto_projection_lag_events",
            "Events between the log head and a projection",
            self.lag.clone(),
        );
        registry.register(
            "ipto_search_index_documents",
            "Documents (chunks) in this instance's search index",
            self.index_documents.clone(),
        );
        self
    }

    /// Records one served request: its method, matched route, status and latency.
    pub fn request(&self, method: String, route: String, status: u16, seconds: f64) {
        let route = RouteLabels { method, route };
        self.latency.get_or_create(&route).observe(seconds);
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
    }

    /// Records one command and how it ended (`ok`, `rejected`, `conflict`, `error`).
    pub fn command(&self, aggregate: &'static str, outcome: &'static str, events: usize) {
        self.commands
            .get_or_create(&CommandLabels { aggregate, outcome })
            .inc();
        self.events.inc_by(events as u64);
    }

    /// The text exposition, with the log head, projection positions and the search index's
    /// document count given by the caller (read at scrape time).
    pub fn render(&self, head: i64, projections: &[(String, i64)], index_documents: u64) -> String {
        self.head.set(head);
        for (name, position) in projections {
            let projection = ProjectionLabels {
                projection: name.clone(),
            };
            self.positions.get_or_create(&projection).set(*position);
            self.lag
                .get_or_create(&projection)
                .set((head - position).max(0));
        }
        self.index_documents
            .set(i64::try_from(index_documents).unwrap_or(i64::MAX));
        let mut out = String::new();
        if let Err(error) = prometheus_text::encode(&mut out, &self.registry) {
            tracing::error!(%error, "metrics could not be encoded");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_commands_and_lag_are_rendered() {
        let metrics = Metrics::default();
        metrics.request("GET".into(), "/v1/me".into(), 200, 0.003);
        metrics.request("GET".into(), "/v1/me".into(), 200, 0.3);
        metrics.command("user", "ok", 2);
        let text = metrics.render(10, &[("users".into(), 7)], 42);
        assert!(text.contains(
            "ipto_http_requests_total{method=\"GET\",route=\"/v1/me\",status=\"200\"} 2"
        ));
        assert!(text.contains("ipto_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/me\",le=\"0.005\"} 1"));
        assert!(text.contains("ipto_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/me\",le=\"+Inf\"} 2"));
        assert!(text.contains("ipto_commands_total{aggregate=\"user\",outcome=\"ok\"} 1"));
        assert!(text.contains("ipto_events_appended_total 2"));
        assert!(text.contains("ipto_projection_lag_events{projection=\"users\"} 3"));
        assert!(text.contains("ipto_search_index_documents 42"));
    }

    /// The exposition keeps the names, types and help texts it had when it was written by hand.
    #[test]
    fn the_exposition_is_prometheus_text_with_the_same_families() {
        let metrics = Metrics::default();
        metrics.request("POST".into(), "/v1/datasets".into(), 201, 0.02);
        metrics.command("dataset", "ok", 1);
        let text = metrics.render(5, &[("datasets".into(), 5)], 0);
        let families: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
        assert_eq!(
            families,
            [
                "# HELP ipto_http_requests_total HTTP requests served.",
                "# TYPE ipto_http_requests_total counter",
                "# HELP ipto_http_request_duration_seconds HTTP request latency.",
                "# TYPE ipto_http_request_duration_seconds histogram",
                "# HELP ipto_commands_total Commands executed, by aggregate and outcome.",
                "# TYPE ipto_commands_total counter",
                "# HELP ipto_events_appended_total Events appended by this process.",
                "# TYPE ipto_events_appended_total counter",
                "# HELP ipto_event_log_head Highest global position in the log.",
                "# TYPE ipto_event_log_head gauge",
                "# HELP ipto_projection_position Highest position a projection applied.",
                "# TYPE ipto_projection_position gauge",
                "# HELP ipto_projection_lag_events Events between the log head and a projection.",
                "# TYPE ipto_projection_lag_events gauge",
                "# HELP ipto_search_index_documents Documents (chunks) in this instance's search index.",
                "# TYPE ipto_search_index_documents gauge",
            ]
        );
        let route = "method=\"POST\",route=\"/v1/datasets\"";
        for line in [
            format!("ipto_http_request_duration_seconds_bucket{{{route},le=\"0.01\"}} 0"),
            format!("ipto_http_request_duration_seconds_bucket{{{route},le=\"0.025\"}} 1"),
            format!("ipto_http_request_duration_seconds_bucket{{{route},le=\"1\"}} 1"),
            format!("ipto_http_request_duration_seconds_sum{{{route}}} 0.02"),
            format!("ipto_http_request_duration_seconds_count{{{route}}} 1"),
            "ipto_event_log_head 5".into(),
            "ipto_projection_position{projection=\"datasets\"} 5".into(),
            "ipto_projection_lag_events{projection=\"datasets\"} 0".into(),
            "ipto_search_index_documents 0".into(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("# EOF"), "0.0.4 has no end marker");
    }
}
