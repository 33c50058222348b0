//! Prometheus metrics: request counts and latencies by route template and status. One registry
//! per server instance (no global recorder), so several in-process servers never mix figures.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every label value comes from a closed set: a standard method (else `OTHER`), a route
/// template of the router (else `unmatched`) and a status code. Nothing a client sends can add
/// a label value of its own, so the registry's size is bounded whatever arrives.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

/// The methods counted by name; any other (extension methods are arbitrary tokens of any
/// length) is `OTHER`, in metrics and in log lines alike.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

type HistogramFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily,
}

fn latency_histogram() -> Histogram {
    // 100 µs to ~3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("keyplane");
        let requests = Family::<RequestLabels, Counter>::default();
        let durations: HistogramFamily = Family::new_with_constructor(latency_histogram);
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to answer HTTP requests",
            durations.clone(),
        );
        Self {
            registry,
            requests,
            durations,
        }
    }

    /// Counts an answered request. `route` must be a route template (or `unmatched`), never a
    /// path as sent.
    pub fn observe_request(
        &self,
        method: &axum::http::Method,
        route: &str,
        status: u16,
        elapsed: Duration,
    ) {
        let labels = RequestLabels {
            method: method_label(method),
            route: route.to_owned(),
            status,
        };
        self.durations
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.requests.get_or_create(&labels).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_by_route_and_status() {
        let metrics = Metrics::new();
        let get = axum::http::Method::GET;
        metrics.observe_request(&get, "/healthz", 200, Duration::from_millis(1));
        metrics.observe_request(&get, "/healthz", 200, Duration::from_millis(1));
        metrics.observe_request(&get, "unmatched", 404, Duration::from_millis(1));
        let text = metrics.render();
        assert!(
            text.contains(
                r#"keyplane_http_requests_total{method="GET",route="/healthz",status="200"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"route="unmatched",status="404"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("keyplane_http_request_duration_seconds_bucket"),
            "{text}"
        );
    }

    #[test]
    fn made_up_methods_share_one_label() {
        let metrics = Metrics::new();
        for n in 0..50 {
            let method =
                axum::http::Method::from_bytes(format!("M{n:06}{}", "0".repeat(4096)).as_bytes())
                    .unwrap();
            metrics.observe_request(&method, "unmatched", 400, Duration::from_millis(1));
        }
        let text = metrics.render();
        assert!(
            text.contains(
                r#"keyplane_http_requests_total{method="OTHER",route="unmatched",status="400"} 50"#
            ),
            "{text}"
        );
        assert!(!text.contains("M000001"), "{text}");
        assert!(text.len() < 8_192, "{} bytes", text.len());
    }
}
