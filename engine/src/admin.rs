//! The admin endpoint (`--admin ADDR` or `[admin] listen`): what an operator asks a running
//! engine.
//!
//! - `GET /status`: the running chain version and the last reload error (JSON);
//! - `POST /reload`: reload now (what `sluice reload --admin ADDR` calls); 200 with the new
//!   generation, 422 with the load error naming file, node and field;
//! - `GET /metrics`: counters in the Prometheus text format.
//!
//! It binds wherever it is told; keep it on loopback or behind the platform's network policy —
//! it has no authentication, like most metrics endpoints.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};

use crate::reload::Reloader;

/// A number `/metrics` reports, read when scraped.
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    pub read: Box<dyn Fn() -> f64 + Send + Sync>,
}

/// Metrics parts of the engine register as they start (a source after it connects).
#[derive(Clone, Default)]
pub struct Metrics(Arc<Mutex<Vec<Metric>>>);

impl Metrics {
    pub fn register(&self, metric: Metric) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(metric);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for m in self.0.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            out.push_str(&format!(
                "# HELP {} {}\n# TYPE {} {}\n{} {}\n",
                m.name,
                m.help,
                m.name,
                m.kind,
                m.name,
                (m.read)()
            ));
        }
        out
    }
}

#[derive(Clone)]
struct Admin {
    reloader: Arc<Reloader>,
    metrics: Metrics,
}

#[derive(Debug, thiserror::Error)]
#[error("admin endpoint on {addr}: {source}")]
pub struct AdminError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Binds `addr` and serves until the runtime stops; returns the bound address (port 0 picks one).
pub async fn serve(addr: SocketAddr, reloader: Arc<Reloader>, metrics: Metrics) -> Result<SocketAddr, AdminError> {
    for (name, help, kind, read) in [
        ("sluice_reloads_total", "Chain versions swapped in by a reload.", "counter", 0),
        ("sluice_reload_failures_total", "Reloads refused (invalid chain or module).", "counter", 1),
        ("sluice_chain_generation", "The running chain version (0: the one loaded at start).", "gauge", 2),
    ] {
        let reloader = reloader.clone();
        metrics.register(Metric {
            name,
            help,
            kind,
            read: Box::new(move || {
                let s = reloader.status();
                [s.reloads, s.failed_reloads, s.generation][read] as f64
            }),
        });
    }
    let app = Router::new()
        .route("/status", get(status))
        .route("/reload", post(reload))
        .route("/metrics", get(metrics_text))
        .with_state(Admin { reloader, metrics });
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| AdminError { addr, source })?;
    let bound = listener.local_addr().map_err(|source| AdminError { addr, source })?;
    tracing::info!(%bound, "admin endpoint: GET /status, POST /reload, GET /metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("admin endpoint stopped: {e}");
        }
    });
    Ok(bound)
}

async fn status(State(admin): State<Admin>) -> Json<crate::reload::ReloadStatus> {
    Json(admin.reloader.status())
}

async fn reload(State(admin): State<Admin>) -> Response {
    let reloader = admin.reloader.clone();
    match tokio::task::spawn_blocking(move || reloader.reload("POST /reload")).await {
        Ok(Ok(generation)) => Json(serde_json::json!({"generation": generation})).into_response(),
        Ok(Err(error)) => (StatusCode::UNPROCESSABLE_ENTITY, Json(serde_json::json!({"error": error}))).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn metrics_text(State(admin): State<Admin>) -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], admin.metrics.render())
}
