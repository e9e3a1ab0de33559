//! The handles a sent workflow returns: the [`AsyncResult`] of its last task, with its
//! parents, or a [`GroupResult`].

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Signature;

use crate::client::{AsyncResult, Client, ResultError};
use crate::error::Result;

/// A handle built from a frozen signature (every task in it has its id).
pub trait FromFrozen: Sized {
    /// The handle of `signature`, whose results `client` reads.
    #[doc(hidden)]
    fn from_frozen(signature: &Signature, client: &Client) -> Self;
}

/// The id of the task whose result is the signature's: a task's own, a chain's last
/// step's, a chord's body's; a group's id for a group.
fn result_id(signature: &Signature) -> String {
    match signature.subtask_type.as_deref() {
        Some("chain") => last_step(signature).map_or_else(String::new, |s| result_id(&s)),
        Some("chord") => body(signature).map_or_else(String::new, |s| result_id(&s)),
        _ => signature.task_id().unwrap_or_default().to_owned(),
    }
}

fn last_step(chain: &Signature) -> Option<Signature> {
    chain.decoded_members("tasks").ok()?.pop()
}

fn body(chord: &Signature) -> Option<Signature> {
    serde_json::from_value(chord.kwargs.get("body")?.clone()).ok()
}

impl<R> FromFrozen for AsyncResult<R> {
    fn from_frozen(signature: &Signature, client: &Client) -> Self {
        // A chain's steps are each other's parents, as Celery's frozen results are.
        let parent = match signature.subtask_type.as_deref() {
            Some("chain") => {
                let mut steps = signature.decoded_members("tasks").unwrap_or_default();
                steps.pop();
                steps.iter().fold(None, |parent, step| {
                    let step = client.result::<Value>(result_id(step));
                    Some(step.with_parent(parent))
                })
            }
            _ => None,
        };
        client.result(result_id(signature)).with_parent(parent)
    }
}

impl<R> FromFrozen for GroupResult<R> {
    fn from_frozen(signature: &Signature, client: &Client) -> Self {
        match signature.subtask_type.as_deref() {
            Some("chain") => match last_step(signature) {
                Some(last) => GroupResult::from_frozen(&last, client),
                None => GroupResult::new(client, String::new(), Vec::new()),
            },
            Some("chord") => match body(signature) {
                Some(body) => GroupResult::from_frozen(&body, client),
                None => GroupResult::new(client, String::new(), Vec::new()),
            },
            _ => {
                let members = signature.decoded_members("tasks").unwrap_or_default();
                let ids = members.iter().map(result_id).collect();
                GroupResult::new(client, result_id(signature), ids)
            }
        }
    }
}

/// The results of a group: each member's [`AsyncResult`], in order, under the group's
/// id. [`save`](Self::save) stores it as Celery's `GroupResult.save` does, so Python's
/// `GroupResult.restore(id)` reads it, and [`restore`](Self::restore) reads one back.
pub struct GroupResult<R> {
    id: String,
    results: Vec<AsyncResult<R>>,
    client: Client,
}

impl<R> Clone for GroupResult<R> {
    fn clone(&self) -> Self {
        GroupResult {
            id: self.id.clone(),
            results: self.results.clone(),
            client: self.client.clone(),
        }
    }
}

impl<R> std::fmt::Debug for GroupResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupResult")
            .field("id", &self.id)
            .field("results", &self.results.len())
            .finish()
    }
}

impl<R> GroupResult<R> {
    /// The group `id` of the tasks `task_ids`, read through `client`.
    pub fn new(client: &Client, id: String, task_ids: Vec<String>) -> Self {
        GroupResult {
            id,
            results: task_ids.into_iter().map(|id| client.result(id)).collect(),
            client: client.clone(),
        }
    }

    /// The group id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Each member's result handle, in order.
    pub fn results(&self) -> &[AsyncResult<R>] {
        &self.results
    }

    /// Restores the group saved under `id` (by [`save`](Self::save) or Python's
    /// `GroupResult.save()`); `None` when none is saved.
    pub async fn restore(client: &Client, id: &str) -> Result<Option<Self>> {
        let ids = client.backend().restore_group(id).await?;
        Ok(ids.map(|ids| GroupResult::new(client, id.to_owned(), ids)))
    }

    /// Saves the group in Celery's `celery-taskset-meta-<id>` form.
    pub async fn save(&self) -> Result<()> {
        let ids: Vec<String> = self.results.iter().map(|r| r.id().to_owned()).collect();
        self.client.backend().save_group(&self.id, &ids).await
    }

    /// Deletes the saved group (the members' results stay).
    pub async fn delete(&self) -> Result<()> {
        self.client.backend().delete_group(&self.id).await
    }
}

impl<R: DeserializeOwned> GroupResult<R> {
    /// Waits up to `timeout` in all for every member and returns their results in order;
    /// the first failure (in member order) is returned as the error, as Celery's
    /// `GroupResult.get` raises it.
    pub async fn get(&self, timeout: Duration) -> Result<Vec<R>, ResultError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut values = Vec::with_capacity(self.results.len());
        for result in &self.results {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match result.get(left).await {
                Err(ResultError::Timeout(_)) => return Err(ResultError::Timeout(timeout)),
                other => values.push(other?),
            }
        }
        Ok(values)
    }

    /// How many members have finished with SUCCESS.
    pub async fn completed_count(&self) -> Result<usize> {
        let mut count = 0;
        for result in &self.results {
            count += usize::from(result.successful().await?);
        }
        Ok(count)
    }

    /// Whether every member has finished (SUCCESS, FAILURE or REVOKED).
    pub async fn ready(&self) -> Result<bool> {
        for result in &self.results {
            if !result.ready().await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Revokes every member that has not started, in one broadcast.
    pub async fn revoke(&self) -> Result<()> {
        let task_ids = self.results.iter().map(|r| r.id().to_owned()).collect();
        self.client
            .broker()
            .broadcast(crate::broker::Control::Revoke { task_ids })
            .await
    }
}
