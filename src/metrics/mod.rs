//! Prometheus metrics: upstream Image Factory's `image_factory_*` asset and schematic metrics
//! and `http_*` request metrics (same names and labels, so existing dashboards work), plus
//! bootfactory's own mirror metrics. Served as text at `/metrics` on the main port and,
//! optionally, on `metrics.listen`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// All metrics of one process.
pub struct Metrics {
    registry: Registry,
    /// Assets served from the cache.
    pub assets_delivered_cached: IntCounterVec,
    /// Assets built.
    pub assets_built: IntCounterVec,
    /// Bytes of assets served from the cache.
    pub assets_cached_bytes: IntCounterVec,
    /// Bytes of assets built.
    pub assets_built_bytes: IntCounterVec,
    /// Cache misses (and cache errors).
    pub assets_cached_errors: IntCounterVec,
    /// Time waiting for a build slot.
    pub assets_concurrency_latency: Histogram,
    /// Build duration.
    pub assets_build_latency: Histogram,
    /// Extensions named by requested schematics.
    pub extension_hits: IntCounterVec,
    /// `GET /schematics/{id}`.
    pub schematic_get: IntCounter,
    /// New schematics.
    pub schematic_create: IntCounter,
    /// Schematics posted again.
    pub schematic_duplicate_create: IntCounter,
    /// Schematics in the store.
    pub schematic_cache_size: IntGauge,
    http_duration: HistogramVec,
    http_size: HistogramVec,
    http_inflight: IntGaugeVec,
}

const ASSET_LABELS: &[&str] = &["talos_version", "output_kind", "arch"];
const HTTP_LABELS: &[&str] = &["service", "handler", "method", "code"];

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let build_buckets = vec![1.0, 10.0, 60.0, 180.0, 600.0];
        let histogram = |name: &str, help: &str| {
            let h =
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(build_buckets.clone()))
                    .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let schematic_cache_size = IntGauge::new(
            "image_factory_schematic_cache_size",
            "Number of schematics in the store.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(schematic_cache_size.clone()))
            .expect("unique metric");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "The latency of the HTTP requests.",
            ),
            HTTP_LABELS,
        )
        .expect("valid metric");
        let http_size = HistogramVec::new(
            HistogramOpts::new(
                "http_response_size_bytes",
                "The size of the HTTP responses.",
            )
            .buckets(prometheus::exponential_buckets(100.0, 10.0, 8).expect("valid buckets")),
            HTTP_LABELS,
        )
        .expect("valid metric");
        let http_inflight = IntGaugeVec::new(
            Opts::new(
                "http_requests_inflight",
                "The number of inflight requests being handled at the same time.",
            ),
            &["service", "handler"],
        )
        .expect("valid metric");
        for c in [&http_duration, &http_size] {
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
        }
        registry
            .register(Box::new(http_inflight.clone()))
            .expect("unique metric");
        Arc::new(Metrics {
            assets_delivered_cached: counter_vec(
                "image_factory_assets_delivered_cached_total",
                "Number of assets delivered from the cache.",
                ASSET_LABELS,
            ),
            assets_built: counter_vec(
                "image_factory_assets_built_total",
                "Number of assets built.",
                ASSET_LABELS,
            ),
            assets_cached_bytes: counter_vec(
                "image_factory_assets_cached_bytes_total",
                "Bytes of assets delivered from the cache.",
                ASSET_LABELS,
            ),
            assets_built_bytes: counter_vec(
                "image_factory_assets_built_bytes_total",
                "Bytes of assets built.",
                ASSET_LABELS,
            ),
            assets_cached_errors: counter_vec(
                "image_factory_assets_cached_errors_total",
                "Number of asset cache misses or errors.",
                ASSET_LABELS,
            ),
            assets_concurrency_latency: histogram(
                "image_factory_assets_concurrency_latency_seconds",
                "Time spent waiting for a build slot.",
            ),
            assets_build_latency: histogram(
                "image_factory_assets_build_latency_seconds",
                "Time spent building assets.",
            ),
            extension_hits: counter_vec(
                "image_factory_profile_system_extension_hits_total",
                "Number of times a system extension was requested.",
                &["extension"],
            ),
            schematic_get: counter(
                "image_factory_schematic_get_total",
                "Number of schematic reads.",
            ),
            schematic_create: counter(
                "image_factory_schematic_create_total",
                "Number of schematics created.",
            ),
            schematic_duplicate_create: counter(
                "image_factory_schematic_duplicate_create_total",
                "Number of schematics posted that already existed.",
            ),
            schematic_cache_size,
            registry,
            http_duration,
            http_size,
            http_inflight,
        })
    }

    /// Adds a collector that reads its values at scrape time (e.g. the network-boot counters).
    pub fn register_collector(&self, collector: Box<dyn prometheus::core::Collector>) {
        if let Err(e) = self.registry.register(collector) {
            tracing::warn!(error = %e, "cannot register a metrics collector");
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Records one request (the `handler` label is the route pattern, as upstream).
    fn observe_http(
        &self,
        handler: &str,
        method: &str,
        code: StatusCode,
        seconds: f64,
        size: Option<u64>,
    ) {
        let code = code.as_u16().to_string();
        let labels = ["", handler, method, &code];
        self.http_duration
            .with_label_values(&labels)
            .observe(seconds);
        if let Some(size) = size {
            self.http_size
                .with_label_values(&labels)
                .observe(size as f64);
        }
    }
}

/// axum middleware recording the `http_*` metrics.
pub async fn track_http(
    axum::extract::State(metrics): axum::extract::State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    let handler = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().to_string();
    let inflight = metrics.http_inflight.with_label_values(&["", &handler]);
    inflight.inc();
    let started = Instant::now();
    let response = next.run(request).await;
    inflight.dec();
    let size = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    metrics.observe_http(
        &handler,
        &method,
        response.status(),
        started.elapsed().as_secs_f64(),
        size,
    );
    response
}

/// `GET /metrics`.
pub async fn handler(
    axum::extract::State(metrics): axum::extract::State<Arc<Metrics>>,
) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_upstream_names() {
        let m = Metrics::new();
        m.assets_built
            .with_label_values(&["v1.11.6", "initramfs", "amd64"])
            .inc();
        m.schematic_create.inc();
        m.observe_http(
            "/image/{schematic}/{version}/{path}",
            "GET",
            StatusCode::OK,
            0.01,
            Some(10),
        );
        let text = m.render();
        assert!(text.contains(
            "image_factory_assets_built_total{arch=\"amd64\",output_kind=\"initramfs\",talos_version=\"v1.11.6\"} 1"
        ));
        assert!(text.contains("image_factory_schematic_create_total 1"));
        assert!(text.contains("http_request_duration_seconds_bucket"));
        assert!(text.contains("handler=\"/image/{schematic}/{version}/{path}\""));
    }
}
