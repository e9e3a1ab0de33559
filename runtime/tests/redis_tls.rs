//! `rediss://`: broker and backend over TLS to a Redis of the test's own, trusting its
//! CA through Celery's `ssl_ca_certs` URL parameter.

mod support;

use std::time::Duration;

use celerity::App;
use serde_json::json;
use support::{DOUBLE, unique_queue};

#[tokio::test]
async fn tasks_round_trip_over_tls_with_the_ca_from_the_url() {
    let Some(server) = support::RedisServer::start_tls().await else {
        return;
    };
    let url = format!(
        "{}?ssl_ca_certs={}",
        server.url(),
        server.ca_file().display()
    );
    let app = App::from_urls(&url, &url).await.unwrap();
    let queue = unique_queue();
    let worker = support::doubler(&app, &queue).await;
    let options = celerity::SendOptions {
        queue: Some(queue),
        ..Default::default()
    };
    let sent = app
        .client()
        .send_task::<i64>(&DOUBLE, vec![json!(21)])
        .with_options(options)
        .await
        .unwrap();
    assert_eq!(sent.get(Duration::from_secs(10)).await.unwrap(), 42);
    worker.shutdown().await;
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_refused() {
    let Some(server) = support::RedisServer::start_tls().await else {
        return;
    };
    // The system's roots do not include the test CA.
    let error = celerity::backend::RedisBackend::connect(&server.url())
        .await
        .expect_err("the certificate is not trusted");
    // The reason, not only a failed connection: rustls names the certificate.
    let mut chain = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        chain.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    assert!(chain.contains("could not connect"), "{chain}");
    assert!(chain.contains("certificate"), "{chain}");
}

#[tokio::test]
async fn tls_parameters_on_a_plain_url_are_a_configuration_error() {
    let error = App::from_urls(
        "redis://127.0.0.1:6379/0?ssl_ca_certs=/etc/ca.pem",
        "memory://",
    )
    .await
    .expect_err("ssl_* needs rediss://");
    assert_eq!(error.kind(), celerity::ErrorKind::Config);
    assert!(error.to_string().contains("rediss://"), "{error}");
}
