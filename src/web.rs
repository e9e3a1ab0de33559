//! The shop's web front: an HTTP service that enqueues tasks and reports on them, in the
//! way a FastAPI service hands work to Celery. It runs no task itself; workers do, in
//! their own processes, through the broker.
//!
//! - `POST /orders` takes an [`Order`] as JSON, sends `tasks.process_order`, and answers
//!   `202 Accepted` with `{"task_id": "…"}`.
//! - `GET /tasks/{id}` answers `{"task_id", "state"}`, plus `result` once the task
//!   succeeded or `error` once it failed or was revoked.
//!
//! The handlers get the generated [`TasksRegistry`] from the router's state, built once
//! from the application's client: the same typed client a worker's components receive.

use axum::Router;
use axum::extract::{Json, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use celerity::{AsyncResult, FromClient, ResultError, TaskFailure, TaskProgress};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::tasks::{Order, TasksRegistry};

/// The service's routes, with `tasks` for the handlers.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let app = celerity::App::from_env().await?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
/// axum::serve(listener, celerity_shop::web::router(&app)).await?;
/// # Ok(()) }
/// ```
pub fn router(app: &celerity::App) -> Router {
    Router::new()
        .route("/orders", post(create_order))
        .route("/tasks/{id}", get(task_status))
        .with_state(TasksRegistry::from_client(app.client()))
}

/// The answer to `POST /orders`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Enqueued {
    /// The id of the `tasks.process_order` task; poll `GET /tasks/{task_id}`.
    pub task_id: String,
}

/// The answer to `GET /tasks/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// The task id.
    pub task_id: String,
    /// Celery's state name: `PENDING` (also for ids nobody sent), `STARTED`, `RETRY`,
    /// `SUCCESS`, `FAILURE` or `REVOKED`.
    pub state: String,
    /// The task's result, once `SUCCESS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why the task did not succeed, once `FAILURE` or `REVOKED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// A task's error, or the service's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The exception type, e.g. `InvalidAddress`, or `ServiceUnavailable` when the
    /// service cannot reach the broker or the backend.
    #[serde(rename = "type")]
    pub kind: String,
    /// What went wrong.
    pub message: String,
}

impl From<TaskFailure> for ErrorBody {
    fn from(failure: TaskFailure) -> Self {
        ErrorBody {
            kind: failure.exc_type,
            message: failure.message,
        }
    }
}

async fn create_order(
    State(tasks): State<TasksRegistry>,
    Json(order): Json<Order>,
) -> Result<(StatusCode, Json<Enqueued>), ServiceUnavailable> {
    let sent = tasks.process_order(order).await?;
    let task_id = sent.id().to_owned();
    tracing::info!(task_id, "order enqueued");
    Ok((StatusCode::ACCEPTED, Json(Enqueued { task_id })))
}

async fn task_status(
    State(tasks): State<TasksRegistry>,
    Path(id): Path<String>,
) -> Result<Json<TaskStatus>, ServiceUnavailable> {
    // The service does not know which task an id belongs to, so the result is read as
    // JSON: exactly what the task's typed result serialised to.
    let handle: AsyncResult<Value> = tasks.client().result(id.clone());
    let progress = handle.poll().await?;
    let state = progress.state().clone();
    let (mut result, mut error) = (None, None);
    match progress {
        TaskProgress::Finished(_, Ok(value)) => result = Some(value),
        TaskProgress::Finished(
            _,
            Err(ResultError::Failed(failure) | ResultError::Revoked(failure)),
        ) => error = Some(failure.into()),
        TaskProgress::Finished(_, Err(other)) => return Err(other.into()),
        TaskProgress::Running(_) => {}
    }
    Ok(Json(TaskStatus {
        task_id: id,
        state: state.as_str().to_owned(),
        result,
        error,
    }))
}

/// Why the service could not answer: the broker or the backend failed.
struct ServiceUnavailable(String);

impl From<celerity::Error> for ServiceUnavailable {
    fn from(error: celerity::Error) -> Self {
        ServiceUnavailable(error.to_string())
    }
}

impl From<ResultError> for ServiceUnavailable {
    fn from(error: ResultError) -> Self {
        ServiceUnavailable(error.to_string())
    }
}

impl IntoResponse for ServiceUnavailable {
    fn into_response(self) -> Response {
        let ServiceUnavailable(message) = self;
        tracing::error!(%message, "could not reach the broker or the result backend");
        let body = ErrorBody {
            kind: "ServiceUnavailable".into(),
            message,
        };
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}
