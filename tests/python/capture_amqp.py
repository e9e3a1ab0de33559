"""Publishes one task call through Celery 5 to RabbitMQ, for the wire comparison in
`runtime/tests/amqp_broker.rs`: the Rust test then reads the message back with
`basic.get` and compares it with what Celerity publishes for the same call.

Usage: capture_amqp.py BROKER_URL QUEUE CALL_JSON

CALL_JSON: {"task": name, "args": [...], "kwargs": {...}, and optionally "countdown",
"expires" (seconds), "priority", "max_priority" (Celery's task_queue_max_priority)}.

Prints {"id": <task id>, "reply_to": <the client's oid>} as JSON. The call goes through
`Task.apply_async` of a task registered under that name, as Celerity's typed client is the
counterpart of `apply_async` (which sends `ignore_result`), not of `send_task`. No result
backend is configured, so nothing but the task queue is left on the broker.
"""

import json
import sys

from celery import Celery


def main():
    broker, queue, call = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    app = Celery("capture", broker=broker)
    if call.get("max_priority") is not None:
        app.conf.task_queue_max_priority = call["max_priority"]

    @app.task(name=call["task"])
    def task(*args, **kwargs):
        return None

    options = {key: call[key] for key in ("countdown", "expires", "priority") if key in call}
    result = task.apply_async(
        args=tuple(call.get("args", [])), kwargs=call.get("kwargs", {}), queue=queue, **options
    )
    print(json.dumps({"id": result.id, "reply_to": app.thread_oid}))


if __name__ == "__main__":
    main()
