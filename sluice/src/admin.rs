//! The admin endpoint (`--admin ADDR` or `[admin] listen`): what an operator asks a running
//! engine.
//!
//! - `GET /status`: the running chain version and the last reload error (JSON);
//! - `POST /reload`: reload now (what `sluice reload --admin ADDR` calls); 200 with the new
//!   generation, 422 with the load error naming file, node and field;
//! - `GET /metrics`: counters in the Prometheus text format;
//! - `GET /nodes/{id}/events`, `POST /nodes/{id}/replay`: the flight recorder, and replay;
//! - `GET /`: the web view ([`crate::web`]), which reads `GET /chain` (the running graph) and
//!   `GET /live` (server-sent events: per-node counters and the reload status, every second).
//!
//! It shows message contents (the flight recorder), reloads the chain and replays messages, so it
//! is not open to anyone who can reach it: without a token it binds loopback only, and with a
//! token (`[admin] token = "${SLUICE_ADMIN_TOKEN}"`, `--admin-token`) every request, `/metrics`
//! included, must carry `Authorization: Bearer TOKEN` or gets 401. Prometheus sends one with its
//! scrape config's `authorization` block.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};

use crate::core::metrics::{DynamicFamily, Metric, Metrics, escape};
use crate::reload::{ReloadError, ReloadOptions, Reloader};

#[derive(Clone)]
struct Admin {
    reloader: Arc<Reloader>,
    metrics: Metrics,
    inspect: Inspect,
}

/// What the endpoint shows of the running chain besides its status and metrics.
#[derive(Clone, Default)]
pub struct Inspect {
    /// The flight recorder (`/nodes/{id}/events`, replay).
    pub recorder: Option<crate::flow::recorder::Recorder>,
    /// The workers' live counts (the web view's counters).
    pub live: Option<crate::flow::LiveStats>,
}

/// Where the admin endpoint listens, and the token it requires.
#[derive(Debug, Clone)]
pub struct Listen {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("admin endpoint on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(
        "admin endpoint on {addr}: an address other than loopback needs a token ([admin] token, \
         --admin-token or SLUICE_ADMIN_TOKEN): the endpoint shows message contents and reloads the chain"
    )]
    NoToken { addr: SocketAddr },
    #[error("admin endpoint on {addr}: the token is empty")]
    EmptyToken { addr: SocketAddr },
}

/// Binds `listen.addr` and serves until the runtime stops; returns the bound address (port 0
/// picks one).
pub async fn serve(
    listen: Listen,
    reloader: Arc<Reloader>,
    metrics: Metrics,
    inspect: Inspect,
) -> Result<SocketAddr, AdminError> {
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
            labels: &[],
            read: Box::new(move || {
                let s = reloader.status();
                [s.reloads, s.failed_reloads, s.generation][read] as f64
            }),
        });
    }
    let disabled = reloader.clone();
    metrics.register_dynamic(DynamicFamily {
        name: "sluice_node_disabled",
        help: "1 for each node disabled after repeated crashes (it fails every message until a reload or restart).",
        kind: "gauge",
        samples: Box::new(move || {
            disabled.status().disabled_nodes.into_iter().map(|node| (vec![("node", node)], 1.0)).collect()
        }),
    });
    let Listen { addr, token } = listen;
    match &token {
        None if !addr.ip().is_loopback() => return Err(AdminError::NoToken { addr }),
        Some(t) if t.trim().is_empty() => return Err(AdminError::EmptyToken { addr }),
        _ => {}
    }
    let app = Router::new()
        .route("/status", get(status))
        .route("/reload", post(reload))
        .route("/reload/plan", post(reload_plan))
        .route("/metrics", get(metrics_text))
        .route("/nodes/{id}/events", get(node_events))
        .route("/nodes/{id}/replay", post(replay_node))
        .route("/", get(crate::web::index))
        .route("/chain", get(chain_graph))
        .route("/live", get(live))
        .with_state(Admin { reloader, metrics, inspect });
    let app = match token {
        Some(token) => app.layer(axum::middleware::from_fn_with_state(Arc::<str>::from(token), bearer)),
        None => app,
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| AdminError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| AdminError::Bind { addr, source })?;
    tracing::info!(%bound, "admin endpoint: GET / (the web view), /status, /metrics; POST /reload");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("admin endpoint stopped: {e}");
        }
    });
    Ok(bound)
}

/// Lets a request through only with the token (compared in constant time): in
/// `Authorization: Bearer TOKEN`, or — for the web view, whose browser cannot add a header to
/// its event stream — in the `sluice_admin_token` cookie, which opening `/?token=TOKEN` once sets.
async fn bearer(
    State(token): State<Arc<str>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use subtle::ConstantTimeEq;
    let matches = |given: &str| bool::from(given.as_bytes().ct_eq(token.as_bytes()));
    let headers = request.headers();
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("sluice_admin_token="));
    let query = (request.uri().path() == "/")
        .then(|| request.uri().query())
        .flatten()
        .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("token=")));
    if header.is_some_and(matches) || cookie.is_some_and(matches) {
        return next.run(request).await;
    }
    if query.is_some_and(matches) {
        let mut response = next.run(request).await;
        let cookie = format!("sluice_admin_token={token}; HttpOnly; SameSite=Strict; Path=/");
        if let Ok(value) = axum::http::HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(axum::http::header::SET_COOKIE, value);
        }
        return response;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
        Json(serde_json::json!({"error": "this admin endpoint needs its token: Authorization: Bearer TOKEN (sluice: --token or SLUICE_ADMIN_TOKEN; a browser: open /?token=TOKEN once)"})),
    )
        .into_response()
}

/// `POST /reload/plan` (`{"chain": FILE}`, default the running chain's file): what a reload
/// would do to each node's state, without reloading; 422 with the error a reload would give.
async fn reload_plan(State(admin): State<Admin>, body: axum::body::Bytes) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PlanRequest {
        #[serde(default)]
        chain: Option<std::path::PathBuf>,
    }
    let request: PlanRequest = match body.is_empty() {
        true => PlanRequest { chain: None },
        false => match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(serde_json::json!({"error": format!("not a plan request: {e}")})),
                )
                    .into_response();
            }
        },
    };
    let reloader = admin.reloader.clone();
    match tokio::task::spawn_blocking(move || reloader.plan(request.chain.as_deref())).await {
        Ok(Ok(plan)) => Json(plan).into_response(),
        Ok(Err(error)) => {
            (StatusCode::UNPROCESSABLE_ENTITY, Json(serde_json::json!({"error": error.to_string()}))).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /chain`: the running chain as a graph (see [`crate::web::graph`]).
async fn chain_graph(State(admin): State<Admin>) -> Json<serde_json::Value> {
    Json(crate::web::graph(&admin.reloader.chain()))
}

/// `GET /live`: server-sent events, one a second: every node's counts so far and the reload
/// status (`{"stats": …, "status": …}`), what the web view draws on the graph.
async fn live(
    State(admin): State<Admin>,
) -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    let tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let events = futures_util::stream::unfold((admin, tick), |(admin, mut tick)| async move {
        tick.tick().await;
        let stats = admin.inspect.live.as_ref().map(crate::flow::LiveStats::snapshot);
        let body = serde_json::json!({"stats": stats, "status": admin.reloader.status()});
        let event = axum::response::sse::Event::default().event("live").data(body.to_string());
        Some((Ok(event), (admin, tick)))
    });
    axum::response::sse::Sse::new(events).keep_alive(axum::response::sse::KeepAlive::default())
}

async fn status(State(admin): State<Admin>) -> Json<crate::reload::ReloadStatus> {
    Json(admin.reloader.status())
}

async fn reload(State(admin): State<Admin>) -> Response {
    let reloader = admin.reloader.clone();
    match tokio::task::spawn_blocking(move || reloader.reload("POST /reload")).await {
        Ok(Ok(generation)) => Json(serde_json::json!({"generation": generation})).into_response(),
        Ok(Err(error)) => {
            (StatusCode::UNPROCESSABLE_ENTITY, Json(serde_json::json!({"error": error.to_string()}))).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The flight recorder's last events of a node (`404` with the reason for a node that is not
/// recorded). The id is the node's as in `/status` (`enrich/lookup` for a nested chain's node:
/// the slash is percent-encoded, `enrich%2Flookup`).
async fn node_events(State(admin): State<Admin>, axum::extract::Path(id): axum::extract::Path<String>) -> Response {
    let Some(recorder) = &admin.inspect.recorder else {
        return (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": "no flight recorder in this run"})))
            .into_response();
    };
    match recorder.events(&id) {
        Some(events) => Json(events).into_response(),
        None => {
            let known = admin.reloader.chain().nodes.iter().any(|n| n.id == id);
            let error = if known {
                format!("node `{id}` is not recorded (`\"record\": false` on it, or on its chain file)")
            } else {
                format!("no node `{id}` in the running chain")
            };
            (StatusCode::NOT_FOUND, Json(serde_json::json!({"error": error}))).into_response()
        }
    }
}

/// What `POST /nodes/{id}/replay` takes: the message to run, an edited chain file to run it
/// in (default: the running chain's file), and whether actions are executed.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    input: sluice_sdk::TbMsg,
    #[serde(default)]
    chain: Option<std::path::PathBuf>,
    #[serde(default)]
    live: bool,
}

/// Runs a message through a node (and downstream) in isolation: see [`crate::flow::replay`].
async fn replay_node(
    State(admin): State<Admin>,
    axum::extract::Path(id): axum::extract::Path<String>,
    Json(request): Json<ReplayRequest>,
) -> Response {
    let reloader = admin.reloader.clone();
    let replayed = tokio::task::spawn_blocking(move || {
        reloader.replay(&id, request.input, request.chain.as_deref(), request.live)
    })
    .await;
    match replayed {
        Ok(Ok(replayed)) => Json(replayed).into_response(),
        Ok(Err(error)) => {
            (StatusCode::UNPROCESSABLE_ENTITY, Json(serde_json::json!({"error": error.to_string()}))).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn metrics_text(State(admin): State<Admin>) -> impl IntoResponse {
    let mut text = admin.metrics.render();
    text.push_str(&connector_metrics(&admin.reloader.chain().connectors()));
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// The running chain's connectors: calls by outcome, retries, circuit openings and the circuit's
/// state, one sample per connector (`connector="NAME"`). Read from the chain itself, so a reload
/// that replaces a connector shows the new one.
pub fn connector_metrics(connectors: &[crate::connectors::Granted]) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    if connectors.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let mut family = |name: &str, help: &str, kind: &str, samples: Vec<(String, f64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{{{labels}}} {value}\n"));
        }
    };
    let label = |g: &crate::connectors::Granted| format!("connector=\"{}\"", escape(&g.name));
    let calls = connectors
        .iter()
        .flat_map(|g| {
            let s = &g.connector.stats;
            [("succeeded", &s.succeeded), ("failed", &s.failed), ("rejected", &s.rejected)]
                .map(|(outcome, n)| (format!("{},outcome=\"{outcome}\"", label(g)), n.load(Relaxed) as f64))
        })
        .collect();
    family(
        "sluice_connector_calls_total",
        "Action calls by outcome: answered, failed for good (retries spent), rejected by an open circuit.",
        "counter",
        calls,
    );
    let each = |read: &dyn Fn(&crate::connectors::Granted) -> f64| {
        connectors.iter().map(|g| (label(g), read(g))).collect::<Vec<_>>()
    };
    family(
        "sluice_connector_retries_total",
        "Attempts after the first.",
        "counter",
        each(&|g| g.connector.stats.retries.load(Relaxed) as f64),
    );
    family(
        "sluice_connector_circuit_opened_total",
        "Times the circuit opened.",
        "counter",
        each(&|g| g.connector.stats.opened.load(Relaxed) as f64),
    );
    family(
        "sluice_connector_circuit_state",
        "The circuit: 0 closed, 1 open, 2 half-open (one probe under way).",
        "gauge",
        each(&|g| f64::from(g.connector.circuit().code())),
    );
    out
}

/// Why the reload control could not start: the watcher, or the admin endpoint.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Reload(#[from] ReloadError),
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// Everything that reloads a running pipeline: the file watcher, SIGHUP and the admin
/// endpoint. Dropping it stops the watcher.
pub struct Control {
    pub reloader: Arc<Reloader>,
    /// Where the admin endpoint listens, if it was asked for.
    pub admin: Option<std::net::SocketAddr>,
    _watcher: Option<crate::reload::Watcher>,
}

impl Control {
    /// Starts the watcher (if `options.watch`), the SIGHUP handler and the admin endpoint (if
    /// `admin`). Must run inside the tokio runtime.
    pub async fn start(
        reloader: Reloader,
        options: &ReloadOptions,
        admin: Option<Listen>,
        metrics: Metrics,
        inspect: Inspect,
    ) -> Result<Control, ControlError> {
        let reloader = Arc::new(reloader);
        let watcher = if options.watch { Some(crate::reload::watch(reloader.clone(), options)?) } else { None };
        crate::reload::reload_on_sighup(reloader.clone());
        let admin = match admin {
            Some(listen) => Some(serve(listen, reloader.clone(), metrics, inspect).await?),
            None => None,
        };
        Ok(Control { reloader, admin, _watcher: watcher })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(name: &'static str, labels: &'static [(&'static str, &'static str)], value: f64) -> Metric {
        Metric { name, help: "Help.", kind: "counter", labels, read: Box::new(move || value) }
    }

    #[test]
    fn connectors_report_calls_retries_and_their_circuit() {
        let dir = tempfile::tempdir().unwrap();
        let spec: crate::connectors::ConnectorSpec = serde_json::from_value(serde_json::json!({
            "type": "file", "path": dir.path().join("calls.jsonl").to_str().unwrap()
        }))
        .unwrap();
        let opened = crate::connectors::open("audit \"log\"", &spec, dir.path()).unwrap();
        let granted = crate::connectors::Granted { name: "audit \"log\"".into(), connector: opened };
        let ack = crate::core::Ack::none();
        granted.call("n", &serde_json::json!({"a": 1}), &ack, "m:n:0").unwrap();
        granted.call("n", &serde_json::json!({"a": 2}), &ack, "m:n:1").unwrap();
        let text = connector_metrics(&[granted]);
        assert!(
            text.contains("sluice_connector_calls_total{connector=\"audit \\\"log\\\"\",outcome=\"succeeded\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("outcome=\"failed\"} 0\n"), "{text}");
        assert!(text.contains("# TYPE sluice_connector_circuit_state gauge\n"), "{text}");
        assert!(text.contains("sluice_connector_circuit_state{connector=\"audit \\\"log\\\"\"} 0\n"), "{text}");
        assert_eq!(connector_metrics(&[]), "");
    }

    #[test]
    fn samples_of_a_family_share_one_help_and_type() {
        let metrics = Metrics::default();
        metrics.register(metric("a_total", &[("outcome", "ok")], 3.0));
        metrics.register(metric("b", &[], 1.0));
        // Registered after another family: still rendered with its own.
        metrics.register(metric("a_total", &[("outcome", "bad"), ("why", "token")], 2.0));
        assert_eq!(
            metrics.render(),
            "# HELP a_total Help.\n# TYPE a_total counter\na_total{outcome=\"ok\"} 3\n\
             a_total{outcome=\"bad\",why=\"token\"} 2\n\
             # HELP b Help.\n# TYPE b counter\nb 1\n"
        );
    }

    #[test]
    fn dynamic_families_come_after_with_escaped_labels() {
        let metrics = Metrics::default();
        metrics.register(metric("b", &[], 1.0));
        metrics.register_dynamic(DynamicFamily {
            name: "d",
            help: "Dyn.",
            kind: "gauge",
            samples: Box::new(|| vec![(vec![("node", "a\"b\\c".to_string())], 1.0)]),
        });
        metrics.register_dynamic(DynamicFamily {
            name: "e",
            help: "None.",
            kind: "gauge",
            samples: Box::new(Vec::new),
        });
        assert_eq!(
            metrics.render(),
            "# HELP b Help.\n# TYPE b counter\nb 1\n\
             # HELP d Dyn.\n# TYPE d gauge\nd{node=\"a\\\"b\\\\c\"} 1\n\
             # HELP e None.\n# TYPE e gauge\n"
        );
    }
}
