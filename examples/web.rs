//! The shop's web service: `POST /orders` enqueues `tasks.process_order`, `GET /tasks/{id}`
//! reports its state and result. Workers run the tasks, in their own processes.
//!
//! ```sh
//! # terminal 1: a worker
//! CELERITY_BROKER_URL=redis://127.0.0.1:6379/0 CELERITY_RESULT_BACKEND=redis://127.0.0.1:6379/0 \
//!   cargo run --example worker
//! # terminal 2: the web service, on CELERITY_WEB_ADDR (default 127.0.0.1:8000)
//! CELERITY_BROKER_URL=redis://127.0.0.1:6379/0 CELERITY_RESULT_BACKEND=redis://127.0.0.1:6379/0 \
//!   cargo run --example web
//! ```

use std::net::SocketAddr;

use celerity::App;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr: SocketAddr = std::env::var("CELERITY_WEB_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:8000".into())
        .parse()?;
    let app = App::from_env().await?;
    if app.broker().describe().starts_with("memory") {
        tracing::warn!(
            "the broker is in memory: no worker in another process will see these tasks; \
             set CELERITY_BROKER_URL and CELERITY_RESULT_BACKEND (e.g. redis://127.0.0.1:6379/0)"
        );
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(
        "listening on http://{}, broker {}, results {}",
        listener.local_addr()?,
        app.broker().describe(),
        app.backend().describe()
    );
    axum::serve(listener, celerity_shop::web::router(&app))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
