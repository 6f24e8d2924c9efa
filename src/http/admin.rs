//! The admin listener (DESIGN.md §6): `GET /metrics` (Prometheus text), `GET /healthz`,
//! `GET /readyz`. Bound to its own address, loopback by default.

use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;

/// Shared state of the admin routes.
pub struct AdminState {
    /// Renders the process's metrics.
    pub metrics: &'static PrometheusHandle,
}

/// Register the admin routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(state.metrics.render())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn readyz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ready\n")
}
