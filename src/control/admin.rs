//! The admin listener (docs/operations.md): `GET /metrics` (Prometheus text), `GET /healthz`,
//! `GET /readyz` (503 while draining), and behind the admin bearer token: `GET
//! /admin/connections`, `POST /admin/revoke`, `DELETE /admin/connections/{id}`, `POST
//! /admin/reload`, `POST /admin/drain`. Bound to its own address, loopback by default.
//!
//! With no admin token configured, `/admin/*` answers 404; with a missing or wrong token,
//! 401. The token is compared in constant time. Every answer under `/admin/` is JSON; errors
//! are `{"error": "..."}`.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::fleet::{page_json, parse_conn_id, ConnRef};
use super::reload::Reloader;
use super::revoke::{self, RevokeError, Target};
use crate::auth::unix_now;
use crate::session::index::Sessions;
use crate::state::DrainSignal;
use crate::store::admission::Admission;
use crate::store::fleet::revocation::RedisRevocations;
use crate::store::revocation::{AddError, RevocationStore};

/// Rows per page of `GET /admin/connections` unless `limit` says otherwise.
const DEFAULT_PAGE: usize = 100;
/// Largest `limit` accepted.
const MAX_PAGE: usize = 1000;

/// Shared state of the admin routes.
pub struct AdminState {
    /// Renders the process's metrics.
    pub metrics: &'static PrometheusHandle,
    /// The live sessions (list, kick, revoke).
    pub sessions: Arc<Sessions>,
    /// Revoked tokens and subjects.
    pub revocations: Arc<dyn RevocationStore>,
    /// Config reload.
    pub reloader: Arc<Reloader>,
    /// Draining.
    pub drain: Arc<DrainSignal>,
    /// The bearer token of `/admin/*`; `None` disables them.
    pub token: Option<String>,
    /// Admission (`/readyz` is 503 while it refuses every handshake).
    pub admission: Arc<Admission>,
    /// Fleet mode: the shared revocation store, which also reaches the other nodes.
    pub fleet: Option<Arc<RedisRevocations>>,
}

/// Register the admin routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics))
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/admin/connections", web::get().to(list_connections))
        .route("/admin/connections/{id}", web::delete().to(kick))
        .route("/admin/revoke", web::post().to(revoke))
        .route("/admin/reload", web::post().to(reload))
        .route("/admin/drain", web::post().to(drain))
        .default_service(web::to(not_found));
}

fn json_error(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({"error": message.into()}))
}

async fn not_found() -> HttpResponse {
    json_error(StatusCode::NOT_FOUND, "no such endpoint")
}

/// The bearer-token check of every `/admin/*` route: `Some(refusal)` unless authorized.
fn refuse_unauthorized(req: &HttpRequest, state: &AdminState) -> Option<HttpResponse> {
    let Some(expected) = &state.token else {
        return Some(json_error(StatusCode::NOT_FOUND, "admin API disabled (admin.token_env is not set)"));
    };
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        return None;
    }
    tracing::warn!(event = "admin_unauthorized", path = req.path(), peer = ?req.peer_addr(), "admin request without a valid token");
    Some(
        HttpResponse::Unauthorized()
            .insert_header(("www-authenticate", "Bearer realm=\"wsgate-admin\""))
            .json(serde_json::json!({"error": "missing or wrong admin token"})),
    )
}

async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(state.metrics.render())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

async fn readyz(state: web::Data<AdminState>) -> HttpResponse {
    if state.drain.is_draining() {
        return HttpResponse::ServiceUnavailable().content_type("text/plain").body("draining\n");
    }
    if !state.admission.ready() {
        return HttpResponse::ServiceUnavailable()
            .content_type("text/plain")
            .body("fleet store unreachable (on_redis_down = refuse)\n");
    }
    HttpResponse::Ok().content_type("text/plain").body("ready\n")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    limit: Option<usize>,
    after: Option<u64>,
    fleet: Option<String>,
}

async fn list_connections(
    req: HttpRequest,
    state: web::Data<AdminState>,
    query: Result<web::Query<Page>, actix_web::Error>,
) -> HttpResponse {
    if let Some(refusal) = refuse_unauthorized(&req, &state) {
        return refusal;
    }
    let Ok(page) = query else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "query: limit and after must be non-negative integers; fleet must be 1 (no other parameter)",
        );
    };
    let limit = page.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return json_error(StatusCode::BAD_REQUEST, format!("limit must be between 1 and {MAX_PAGE}"));
    }
    let whole_fleet = match page.fleet.as_deref() {
        None | Some("0") => false,
        Some("1") => true,
        Some(_) => return json_error(StatusCode::BAD_REQUEST, "fleet must be 1 or 0"),
    };
    let after = page.after.unwrap_or(0);
    let (rows, next) = state.sessions.page(after, limit, unix_now());
    let Some(fleet) = &state.fleet else {
        if whole_fleet {
            return json_error(
                StatusCode::BAD_REQUEST,
                "fleet=1: this gateway is not in fleet mode ([fleet] is not set)",
            );
        }
        return HttpResponse::Ok().json(serde_json::json!({"connections": rows, "next": next}));
    };
    let local = page_json(fleet.node(), rows, next);
    if !whole_fleet {
        return HttpResponse::Ok().json(local);
    }
    match fleet.list_remote(limit, after).await {
        Ok((answers, missing)) => {
            let mut nodes = vec![local];
            nodes.extend(answers.iter().filter_map(|a| serde_json::from_str::<serde_json::Value>(a).ok()));
            HttpResponse::Ok().json(serde_json::json!({"nodes": nodes, "missing": missing}))
        }
        Err(e) => HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "error": format!("fleet store unreachable: only this node is listed ({e})"),
            "nodes": [local],
        })),
    }
}

async fn kick(req: HttpRequest, state: web::Data<AdminState>, id: web::Path<String>) -> HttpResponse {
    if let Some(refusal) = refuse_unauthorized(&req, &state) {
        return refusal;
    }
    let this = state.fleet.as_ref().map(|f| f.node());
    let Some(target) = parse_conn_id(&id, this) else {
        let want = if this.is_some() { "<node>-<number> or a number" } else { "an integer" };
        return json_error(StatusCode::BAD_REQUEST, format!("connection id must be {want}"));
    };
    let (node, id) = match (target, &state.fleet) {
        (ConnRef::Local(id), _) => {
            if !revoke::kick(&state.sessions, id) {
                return json_error(StatusCode::NOT_FOUND, format!("no live connection {id}"));
            }
            return HttpResponse::Ok().json(serde_json::json!({"closed": 1}));
        }
        (ConnRef::Remote { node, id }, Some(fleet)) => match fleet.live_nodes().await {
            Ok(live) if live.contains(&node) => (node, id),
            Ok(_) => return json_error(StatusCode::NOT_FOUND, format!("no live node {node}")),
            Err(e) => return json_error(StatusCode::SERVICE_UNAVAILABLE, format!("fleet store unreachable: {e}")),
        },
        (ConnRef::Remote { .. }, None) => return json_error(StatusCode::NOT_FOUND, "no such connection"),
    };
    let Some(fleet) = &state.fleet else { return json_error(StatusCode::NOT_FOUND, "no such connection") };
    match fleet.kick_remote(&node, id).await {
        Ok(Some(true)) => HttpResponse::Ok().json(serde_json::json!({"closed": 1, "node": node})),
        Ok(Some(false)) => json_error(StatusCode::NOT_FOUND, format!("no live connection {node}-{id}")),
        Ok(None) => json_error(StatusCode::GATEWAY_TIMEOUT, format!("node {node} did not answer in time")),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, format!("fleet store unreachable: {e}")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    jti: Option<String>,
    sub: Option<String>,
    /// Unix seconds until which the entry is kept (the token's, or the subject's tokens',
    /// latest `exp`).
    exp: Option<u64>,
}

async fn revoke(req: HttpRequest, state: web::Data<AdminState>, body: web::Bytes) -> HttpResponse {
    if let Some(refusal) = refuse_unauthorized(&req, &state) {
        return refusal;
    }
    // The body is JSON whatever its Content-Type says: `curl -d` sends form encoding by
    // default, and the bearer token already rules out cross-site requests.
    let body: RevokeRequest = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("body is not a revocation: {e}")),
    };
    let target = match (body.jti, body.sub) {
        (Some(jti), None) => Target::Token(jti),
        (None, Some(sub)) => Target::Subject(sub),
        _ => return json_error(StatusCode::BAD_REQUEST, RevokeError::Empty.to_string()),
    };
    let revoked = match revoke::revoke(state.revocations.as_ref(), &state.sessions, target, body.exp).await {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match revoked.stored {
        Ok(()) => HttpResponse::Ok().json(serde_json::json!({"closed": revoked.closed})),
        Err(e) => {
            tracing::error!(error = %e, "revocation is in force on this node but not stored as asked");
            let status = match e {
                AddError::NotPersisted(_) => StatusCode::INTERNAL_SERVER_ERROR,
                AddError::NotShared(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            HttpResponse::build(status).json(serde_json::json!({"error": e.to_string(), "closed": revoked.closed}))
        }
    }
}

async fn reload(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Some(refusal) = refuse_unauthorized(&req, &state) {
        return refusal;
    }
    let reloader = Arc::clone(&state.reloader);
    // File reads and key parsing: off the admin worker's event loop.
    match web::block(move || reloader.reload("admin")).await {
        Ok(Ok(r)) => HttpResponse::Ok().json(serde_json::json!({"result": "ok", "reloaded": r})),
        Ok(Err(e)) => json_error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("reload did not run: {e}")),
    }
}

async fn drain(req: HttpRequest, state: web::Data<AdminState>) -> HttpResponse {
    if let Some(refusal) = refuse_unauthorized(&req, &state) {
        return refusal;
    }
    let started = state.drain.start();
    HttpResponse::Accepted().json(serde_json::json!({
        "draining": true,
        "already": !started,
        "connections": state.sessions.len(),
    }))
}
