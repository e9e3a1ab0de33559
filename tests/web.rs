//! The web service example over real HTTP: `POST /orders` enqueues an order, a worker
//! runs it, `GET /tasks/{id}` reports its state and typed result (or its error). On the
//! embedded broker always, and on Redis (the README's setup) when it is reachable.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{Method, Request, StatusCode};
use celerity::App;
use celerity::backend::RedisBackend;
use celerity::broker::MemoryBroker;
use celerity_shop::tasks::{EmailAddress, OrderOutcome, OrderStatus, TasksRegistry};
use celerity_shop::web::{Enqueued, ErrorBody, TaskStatus};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

mod support;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

#[tokio::test]
async fn orders_round_trip_through_the_web_service_on_the_embedded_broker() {
    orders_round_trip(App::memory()).await;
}

#[tokio::test]
async fn orders_round_trip_through_the_web_service_on_redis() {
    let Some(url) = support::redis_url() else {
        return;
    };
    orders_round_trip(App::from_urls(&url, &url).await.unwrap()).await;
}

/// The service on an ephemeral port and a worker, both on `app`'s broker and backend.
async fn orders_round_trip(app: App) {
    let mut builder = app.worker();
    celerity_shop::register(&mut builder);
    let worker = builder.start().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server =
        tokio::spawn(axum::serve(listener, celerity_shop::web::router(&app)).into_future());
    let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // An order as a client writes it: no metadata, no shipping (both optional).
    let order = json!({
        "id": "7f8c2c1e-4d5b-4a7e-9a51-0b6f6a2d9c11",
        "customer_id": "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6",
        "lines": [
            {"sku": "TEA-01", "quantity": 2, "unit_price_cents": 450},
            {"sku": "MUG-07", "quantity": 1, "unit_price_cents": 1200}
        ]
    });
    let (status, body) = send(&http, Method::POST, addr, "/orders", Some(&order)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let Enqueued { task_id } = serde_json::from_value(body).unwrap();

    let done = poll_until_ready(&http, addr, &task_id).await;
    assert_eq!(done.state, "SUCCESS");
    assert_eq!(done.error, None);
    let outcome: OrderOutcome = serde_json::from_value(done.result.expect("a result")).unwrap();
    assert_eq!(
        outcome.order_id.to_string(),
        "7f8c2c1e-4d5b-4a7e-9a51-0b6f6a2d9c11"
    );
    assert_eq!(outcome.status, OrderStatus::Accepted);
    assert_eq!(outcome.total_cents, 2100);
    assert_eq!(
        outcome.warnings,
        ["no shipping address: collection in store"]
    );

    // A failed task reports its error, typed as the task raised it.
    let tasks = TasksRegistry::new(app.client());
    let nobody = EmailAddress {
        email: "nobody".into(),
        name: None,
    };
    let failing = tasks
        .send_email(nobody, "Hi".into(), String::new())
        .await
        .unwrap();
    let failed = poll_until_ready(&http, addr, failing.id()).await;
    assert_eq!(failed.state, "FAILURE");
    assert_eq!(failed.result, None);
    assert_eq!(
        failed.error,
        Some(ErrorBody {
            kind: "InvalidAddress".into(),
            message: "`nobody` is not an email address".into()
        })
    );

    // An id nobody sent is PENDING, as in Celery.
    let (status, body) = send(&http, Method::GET, addr, "/tasks/no-such-task", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"task_id": "no-such-task", "state": "PENDING"}));

    // An order that does not fit the schema is refused before anything is sent.
    let (status, body) = send(
        &http,
        Method::POST,
        addr,
        "/orders",
        Some(&json!({"id": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    server.abort();
    worker.shutdown().await;
}

/// When the result backend goes away, the service answers 503 with the reason instead of
/// hanging or calling the task pending. The backend is the shared Redis, reached through a
/// proxy the test cuts.
#[tokio::test]
async fn a_lost_result_backend_is_a_503_with_the_reason() {
    let Some(url) = support::redis_url() else {
        return;
    };
    let proxy = Proxy::to(&url).await;
    let backend = RedisBackend::connect(&proxy.url(&url))
        .await
        .unwrap()
        .retry_window(Duration::ZERO);
    let app = App::new(MemoryBroker::new(), backend);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server =
        tokio::spawn(axum::serve(listener, celerity_shop::web::router(&app)).into_future());
    let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let path = "/tasks/7f8c2c1e-4d5b-4a7e-9a51-0b6f6a2d9c11";
    let (status, _) = send(&http, Method::GET, addr, path, None).await;
    assert_eq!(status, StatusCode::OK, "reachable at first");

    proxy.cut();
    let (status, body) = send(&http, Method::GET, addr, path, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let error: ErrorBody = serde_json::from_value(body).unwrap();
    assert_eq!(error.kind, "ServiceUnavailable");
    assert!(
        error.message.starts_with("redis: could not"),
        "{}",
        error.message
    );
    server.abort();
}

/// The `host:port` of a `redis://[user:password@]host:port[/db]` URL.
fn host_and_port(url: &str) -> &str {
    let authority = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap();
    authority.rsplit('@').next().unwrap()
}

/// A TCP proxy to the Redis of a URL. [`cut`](Self::cut) closes every connection through
/// it and stops listening, as when the server goes away.
struct Proxy {
    port: u16,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn to(url: &str) -> Proxy {
        let upstream = host_and_port(url).to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tasks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let accepted = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let relay = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                accepted.lock().unwrap().push(relay.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
        Proxy { port, tasks }
    }

    /// `url` with the proxy's address in place of the server's.
    fn url(&self, url: &str) -> String {
        url.replacen(host_and_port(url), &format!("127.0.0.1:{}", self.port), 1)
    }

    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn poll_until_ready(http: &HttpClient, addr: SocketAddr, id: &str) -> TaskStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = send(http, Method::GET, addr, &format!("/tasks/{id}"), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let report: TaskStatus = serde_json::from_value(body).unwrap();
        assert_eq!(report.task_id, id);
        if ["SUCCESS", "FAILURE", "REVOKED"].contains(&report.state.as_str()) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} still {}",
            report.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One request; the body is read as JSON, or as a JSON string when it is not JSON.
async fn send(
    http: &HttpClient,
    method: Method,
    addr: SocketAddr,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let response = http
        .request(request.body(Full::new(Bytes::from(payload))).unwrap())
        .await
        .expect("the service answers");
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}
