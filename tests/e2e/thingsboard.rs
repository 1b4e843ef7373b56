//! A stand-in ThingsBoard on a loopback port: JWT login, assets by name (get or create), asset
//! telemetry — the REST API the wind-zones chain's `rest-action` speaks. It records the assets
//! it created and every telemetry post with its `Idempotency-Key`, and can be made slow or
//! unreliable ([`Faults`]) to test what Sluice does when a server misbehaves.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// How the stand-in misbehaves. Faults are drawn per request from a seeded generator, so a run
/// is reproducible.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Faults {
    /// Every request is answered this much later.
    pub delay: Duration,
    /// The share of requests answered `500` without being handled.
    pub fail: f64,
    /// The share of requests handled, then answered only after `stall_for` (a client that
    /// gave up meanwhile never learns that its request was taken: its retry is a duplicate).
    pub stall: f64,
    pub stall_for: Duration,
    pub seed: u64,
}

/// What the stand-in saw.
#[derive(Default)]
pub(crate) struct ThingsBoard {
    pub(crate) assets: BTreeMap<String, String>,
    pub(crate) created: Vec<String>,
    /// Telemetry taken, in order: (asset id, body).
    pub(crate) telemetry: Vec<(String, Value)>,
    /// Telemetry posts by idempotency key: (asset id, body) of the first, and how many came.
    pub(crate) by_key: BTreeMap<String, (String, Value, u32)>,
    /// Device API posts (`/api/v1/{token}/telemetry`): (token, body, idempotency key).
    pub(crate) device_telemetry: Vec<(String, Value, Option<String>)>,
    /// Telemetry posts that had no idempotency key.
    pub(crate) without_key: u64,
    /// Requests answered 500 on purpose, and stalled.
    pub(crate) failed: u64,
    pub(crate) stalled: u64,
    unauthorised: u64,
}

type Tb = Arc<Mutex<ThingsBoard>>;

/// A stand-in that behaves.
pub(crate) fn start_thingsboard()
-> (String, Arc<Mutex<ThingsBoard>>, std::thread::JoinHandle<()>, tokio::sync::oneshot::Sender<()>) {
    start_thingsboard_with(Faults::default())
}

/// A stand-in with `faults`: its URL, what it saw, its thread and its stop switch.
pub(crate) fn start_thingsboard_with(
    faults: Faults,
) -> (String, Arc<Mutex<ThingsBoard>>, std::thread::JoinHandle<()>, tokio::sync::oneshot::Sender<()>) {
    use axum::extract::{Path as UrlPath, Query, Request, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::middleware::{self, Next};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    fn authorised(headers: &HeaderMap, tb: &Tb) -> bool {
        let ok = headers.get("x-authorization").and_then(|v| v.to_str().ok()) == Some("Bearer jwt-1");
        if !ok {
            tb.lock().unwrap().unauthorised += 1;
        }
        ok
    }
    let tb: Tb = Arc::default();
    let rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(faults.seed)));
    let misbehave = move |State(tb): State<Tb>, request: Request, next: Next| {
        let rng = rng.clone();
        async move {
            tokio::time::sleep(faults.delay).await;
            let draw = rng.lock().unwrap().f64();
            if draw < faults.fail {
                tb.lock().unwrap().failed += 1;
                return (StatusCode::INTERNAL_SERVER_ERROR, "injected failure").into_response();
            }
            let response: Response = next.run(request).await;
            if draw < faults.fail + faults.stall {
                tb.lock().unwrap().stalled += 1;
                tokio::time::sleep(faults.stall_for).await;
            }
            response
        }
    };
    let app = axum::Router::new()
        .route(
            "/api/auth/login",
            post(|axum::Json(body): axum::Json<Value>| async move {
                if body == json!({"username": "tenant@thingsboard.org", "password": "tenant"}) {
                    (StatusCode::OK, axum::Json(json!({"token": "jwt-1", "refreshToken": "r"})))
                } else {
                    (StatusCode::UNAUTHORIZED, axum::Json(json!({"message": "Invalid username or password"})))
                }
            }),
        )
        .route(
            "/api/tenant/assets",
            get(|State(tb): State<Tb>, headers: HeaderMap, Query(q): Query<BTreeMap<String, String>>| async move {
                if !authorised(&headers, &tb) {
                    return (StatusCode::UNAUTHORIZED, axum::Json(Value::Null));
                }
                match tb.lock().unwrap().assets.get(&q["assetName"]) {
                    Some(id) => (StatusCode::OK, axum::Json(json!({"id": {"entityType": "ASSET", "id": id}}))),
                    None => (StatusCode::NOT_FOUND, axum::Json(json!({"message": "Requested item wasn't found!"}))),
                }
            }),
        )
        .route(
            "/api/asset",
            post(|State(tb): State<Tb>, headers: HeaderMap, axum::Json(body): axum::Json<Value>| async move {
                if !authorised(&headers, &tb) {
                    return (StatusCode::UNAUTHORIZED, axum::Json(Value::Null));
                }
                let mut tb = tb.lock().unwrap();
                let name = body["name"].as_str().unwrap().to_string();
                // Get-or-create, as a retried create must be: the same name is the same asset.
                if let Some(id) = tb.assets.get(&name) {
                    let id = id.clone();
                    return (
                        StatusCode::OK,
                        axum::Json(json!({"id": {"entityType": "ASSET", "id": id}, "name": name})),
                    );
                }
                let id = format!("00000000-0000-0000-0000-{:012}", tb.assets.len() + 1);
                tb.assets.insert(name.clone(), id.clone());
                tb.created.push(name.clone());
                (StatusCode::OK, axum::Json(json!({"id": {"entityType": "ASSET", "id": id}, "name": name})))
            }),
        )
        .route(
            "/api/plugins/telemetry/ASSET/{id}/timeseries/values",
            post(
                |State(tb): State<Tb>,
                 headers: HeaderMap,
                 UrlPath(id): UrlPath<String>,
                 axum::Json(body): axum::Json<Value>| async move {
                    if !authorised(&headers, &tb) {
                        return StatusCode::UNAUTHORIZED;
                    }
                    let mut tb = tb.lock().unwrap();
                    match headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
                        Some(key) => {
                            let seen = tb.by_key.entry(key.to_string()).or_insert((id.clone(), body.clone(), 0));
                            seen.2 += 1;
                            if seen.2 > 1 {
                                // A duplicate: taken already, not again.
                                return StatusCode::OK;
                            }
                        }
                        None => tb.without_key += 1,
                    }
                    tb.telemetry.push((id, body));
                    StatusCode::OK
                },
            ),
        )
        .route(
            "/api/v1/{token}/telemetry",
            post(
                |State(tb): State<Tb>, headers: HeaderMap, UrlPath(token): UrlPath<String>, body: String| async move {
                    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string);
                    let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
                    tb.lock().unwrap().device_telemetry.push((token, body, key));
                    StatusCode::OK
                },
            ),
        )
        .layer(middleware::from_fn_with_state(tb.clone(), misbehave))
        .with_state(tb.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
    });
    (url, tb, server, stop)
}
