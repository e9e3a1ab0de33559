//! How events travel as messages, the same on every transport: each worker event in a
//! message of its own, routed by its type (`worker.heartbeat`); task events in lists of
//! up to 24 on the routing key `task.multi`, which is what a Celery worker sends from its
//! event loop (the prefork pool, Celery's default: `celery/worker/consumer/events.py`
//! buffers the `task` group, and `EventDispatcher.flush` publishes each buffer as one
//! list with `buffer_limit = 24`). Receivers take a list body as that many events
//! (`celery/events/receiver.py::EventReceiver._receive`); a monitor binding `#` or
//! `task.#` (Flower, `celery events`) sees them all.
//!
//! Every message is JSON, transient, with the header `{"hostname": …}`
//! (`EventDispatcher.publish`).

use serde_json::{Map, Value};

use super::Event;
use crate::protocol::{Properties, RawMessage, to_python_json_sized};

/// The most task events in one message: Celery's `buffer_limit`.
const TASK_EVENTS_PER_MESSAGE: usize = 24;

/// The routing key of a list of task events.
const TASK_MULTI: &str = "task.multi";

/// `events` as the messages that carry them, in order, each with its routing key.
pub(crate) fn messages(events: &[Event]) -> Vec<(String, RawMessage)> {
    let mut messages = Vec::new();
    let mut tasks: Vec<&Event> = Vec::with_capacity(TASK_EVENTS_PER_MESSAGE);
    for event in events {
        if event.task_id().is_none() {
            flush(&mut tasks, &mut messages);
            let single = message(event.hostname(), event, event.size());
            messages.push((event.routing_key(), single));
            continue;
        }
        tasks.push(event);
        if tasks.len() == TASK_EVENTS_PER_MESSAGE {
            flush(&mut tasks, &mut messages);
        }
    }
    flush(&mut tasks, &mut messages);
    messages
}

/// The task events gathered, as one list, if there are any.
fn flush(tasks: &mut Vec<&Event>, messages: &mut Vec<(String, RawMessage)>) {
    if let Some(first) = tasks.first() {
        let size = tasks.iter().map(|event| event.size()).sum();
        let list = message(first.hostname(), &*tasks, size);
        messages.push((TASK_MULTI.to_owned(), list));
        tasks.clear();
    }
}

/// A message from `hostname` with `body`, written in about `size` bytes.
fn message(hostname: &str, body: &impl serde::Serialize, size: usize) -> RawMessage {
    let mut headers = Map::new();
    headers.insert("hostname".into(), Value::from(hostname));
    RawMessage {
        headers,
        properties: Properties {
            delivery_mode: Some(1),
            priority: Some(0),
            ..Properties::default()
        },
        content_type: "application/json".into(),
        content_encoding: "utf-8".into(),
        body: to_python_json_sized(body, size).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventDispatcher;
    use crate::events::TaskDetail;

    #[test]
    fn worker_events_go_alone_and_task_events_in_lists_of_24_on_task_multi() {
        let dispatcher = EventDispatcher::new("w1@vm", true);
        dispatcher.send_worker(crate::events::WORKER_ONLINE, 0, 0);
        for n in 0..30 {
            dispatcher.send_task(format!("t-{n}"), TaskDetail::Started);
        }
        dispatcher.send_worker(crate::events::WORKER_HEARTBEAT, 0, 0);
        dispatcher.send_task("t-30".into(), TaskDetail::Started);
        let events = dispatcher.outbox().take();
        let sent = messages(&events);
        let routes: Vec<&str> = sent.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(
            routes,
            [
                "worker.online",
                "task.multi",
                "task.multi",
                "worker.heartbeat",
                "task.multi"
            ]
        );
        let body = |i: usize| serde_json::from_slice::<Value>(&sent[i].1.body).unwrap();
        assert_eq!(body(0)["type"], "worker-online");
        let lists: Vec<usize> = [1, 2, 4]
            .map(|i| body(i).as_array().map_or(0, Vec::len))
            .to_vec();
        assert_eq!(lists, [24, 6, 1]);
        assert_eq!(body(1)[0]["uuid"], "t-0");
        assert_eq!(body(2)[5]["uuid"], "t-29");
        let (_, heartbeat) = &sent[3];
        assert_eq!(heartbeat.headers["hostname"], "w1@vm");
        assert_eq!(heartbeat.properties.delivery_mode, Some(1));
        assert_eq!(heartbeat.content_type, "application/json");
    }
}
