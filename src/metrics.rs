//! Prometheus metrics (text format 0.0.4): HTTP requests and latency by route and status, commands
//! by aggregate and outcome, events appended, and the log head and each projection's position and
//! lag (read at scrape time).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The process's counters and histograms.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<(String, String), Histogram>>,
    commands: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    events: Mutex<u64>,
}

impl Metrics {
    /// Records one served request.
    pub fn request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let key = (method.to_owned(), route.to_owned());
        *self
            .requests
            .lock()
            .expect("lock")
            .entry((key.0.clone(), key.1.clone(), status))
            .or_insert(0) += 1;
        let mut latency = self.latency.lock().expect("lock");
        let histogram = latency.entry(key).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                histogram.counts[i] += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    /// Records one command and how it ended (`ok`, `rejected`, `conflict`, `error`).
    pub fn command(&self, aggregate: &'static str, outcome: &'static str, events: usize) {
        *self
            .commands
            .lock()
            .expect("lock")
            .entry((aggregate, outcome))
            .or_insert(0) += 1;
        *self.events.lock().expect("lock") += events as u64;
    }

    /// The text exposition, with the log head, projection positions and the search index's
    /// document count given by the caller.
    pub fn render(&self, head: i64, projections: &[(String, i64)], index_documents: u64) -> String {
        let mut out = String::new();
        out.push_str("# HELP ipto_http_requests_total HTTP requests served.\n# TYPE ipto_http_requests_total counter\n");
        for ((method, route, status), n) in self.requests.lock().expect("lock").iter() {
            let _ = writeln!(out, "ipto_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}", escape(route));
        }
        out.push_str("# HELP ipto_http_request_duration_seconds HTTP request latency.\n# TYPE ipto_http_request_duration_seconds histogram\n");
        for ((method, route), h) in self.latency.lock().expect("lock").iter() {
            let labels = format!("method=\"{method}\",route=\"{}\"", escape(route));
            for (bound, count) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "ipto_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "ipto_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "ipto_http_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "ipto_http_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        out.push_str("# HELP ipto_commands_total Commands executed, by aggregate and outcome.\n# TYPE ipto_commands_total counter\n");
        for ((aggregate, outcome), n) in self.commands.lock().expect("lock").iter() {
            let _ = writeln!(
                out,
                "ipto_commands_total{{aggregate=\"{aggregate}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        out.push_str("# HELP ipto_events_appended_total Events appended by this process.\n# TYPE ipto_events_appended_total counter\n");
        let _ = writeln!(
            out,
            "ipto_events_appended_total {}",
            self.events.lock().expect("lock")
        );
        out.push_str("# HELP ipto_event_log_head Highest global position in the log.\n# TYPE ipto_event_log_head gauge\n");
        let _ = writeln!(out, "ipto_event_log_head {head}");
        out.push_str("# HELP ipto_projection_position Highest position a projection applied.\n# TYPE ipto_projection_position gauge\n");
        for (name, position) in projections {
            let _ = writeln!(
                out,
                "ipto_projection_position{{projection=\"{name}\"}} {position}"
            );
        }
        out.push_str("# HELP ipto_projection_lag_events Events between the log head and a projection.\n# TYPE ipto_projection_lag_events gauge\n");
        for (name, position) in projections {
            let _ = writeln!(
                out,
                "ipto_projection_lag_events{{projection=\"{name}\"}} {}",
                (head - position).max(0)
            );
        }
        out.push_str("# HELP ipto_search_index_documents Documents (chunks) in this instance's search index.\n# TYPE ipto_search_index_documents gauge\n");
        let _ = writeln!(out, "ipto_search_index_documents {index_documents}");
        out
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_commands_and_lag_are_rendered() {
        let metrics = Metrics::default();
        metrics.request("GET", "/v1/me", 200, 0.003);
        metrics.request("GET", "/v1/me", 200, 0.3);
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
}
