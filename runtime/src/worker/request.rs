//! What a worker records about a task's request beside its result, as Celery's
//! `Backend._get_result_meta` does: the group and parent ids whenever the request has
//! them, and with `result_extended` the task's name, arguments, worker, retries and queue.

use crate::canvas::Signature;
use crate::protocol::{ExtendedMeta, RequestMeta, TaskMessage};

use super::shared::Shared;

impl Shared {
    /// The request of `message`, delivered from `queue` to this worker. Taken before the
    /// task runs: the run consumes the message's arguments.
    pub(super) fn request_of(&self, message: &TaskMessage, queue: &str) -> RequestMeta {
        let extended = self.result_extended.then(|| ExtendedMeta {
            name: Some(message.task().to_owned()),
            args: Some(message.args.clone()),
            kwargs: Some(message.kwargs.clone()),
            worker: Some(self.hostname.clone()),
            retries: Some(message.headers.retries),
            // Celery writes `delivery_info['routing_key']`, which its default routing
            // makes the queue's name (`task_default_routing_key`); the transports do not
            // pass the routing key on, so the queue consumed stands for it.
            queue: Some(queue.to_owned()),
        });
        RequestMeta {
            group_id: message.headers.group.clone(),
            parent_id: message.headers.parent_id.clone(),
            extended,
        }
    }

    /// The request of a message naming a task this worker does not know. Celery records
    /// it with a request that has none of the extended fields, so each is `null`, and no
    /// group or parent (`celery/worker/consumer/consumer.py::on_unknown_task`).
    pub(super) fn unknown_request(&self) -> RequestMeta {
        RequestMeta {
            extended: self.result_extended.then(ExtendedMeta::default),
            ..RequestMeta::default()
        }
    }

    /// The request of a chain step that an earlier step's failure fails before it was
    /// sent. Celery builds it from the step's signature (`Backend._fail_chain`): its
    /// task, arguments and `group_id`/`parent_id` options, no worker and no queue, and
    /// `retries` 0 (`Context`'s default).
    pub(super) fn request_of_step(&self, step: &Signature) -> RequestMeta {
        let extended = self.result_extended.then(|| ExtendedMeta {
            name: Some(step.task.clone()),
            args: Some(step.args.clone()),
            kwargs: Some(step.kwargs.clone()),
            worker: None,
            retries: Some(0),
            queue: None,
        });
        RequestMeta {
            group_id: step.option_str("group_id").map(str::to_owned),
            parent_id: step.option_str("parent_id").map(str::to_owned),
            extended,
        }
    }
}
