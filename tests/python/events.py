"""Captures Celery's monitoring events as Celery's own monitors do, for the interop suite
(tests/interop/events.rs): an `app.events.Receiver` on the broker of interop_app, feeding
an `app.events.State`, as Flower and `celery events` do.

Prints `ready` once it is subscribed (having asked every worker for a heartbeat, as a
Receiver does when it starts), then one JSON line per event:

    {"event": {...the event as received...},
     "worker": {"alive": true, "active": 0, "processed": 3, ...},   # State's view of its sender
     "task": {"state": "SUCCESS", "result": "3", ...}}              # of its task, for a task event

and stops once its standard input closes.
"""

import json
import sys
import threading

from interop_app import app

WORKER_FIELDS = ("alive", "active", "processed", "freq", "loadavg", "sw_ident", "sw_ver", "sw_sys", "pid")
TASK_FIELDS = (
    "state", "name", "args", "kwargs", "result", "exception", "traceback", "retries",
    "runtime", "eta", "expires", "root_id", "parent_id",
)


def worker_view(state, hostname):
    worker = state.workers.get(hostname)
    if worker is None:
        return None
    return {field: getattr(worker, field, None) for field in WORKER_FIELDS}


def task_view(state, uuid):
    task = state.tasks.get(uuid)
    if task is None:
        return None
    view = {field: getattr(task, field, None) for field in TASK_FIELDS}
    view["worker"] = task.worker.hostname if task.worker else None
    return view


class Receiver(app.events.Receiver):
    iterations = 0

    def on_iteration(self):
        # kombu's Redis transport subscribes (PSUBSCRIBE) in the first drain of events,
        # not when the consumer is declared: only once that drain has run can no event
        # be missed.
        self.iterations += 1
        if self.iterations == 2:
            print("ready", flush=True)


def main():
    state = app.events.State()

    def on_event(event):
        state.event(event)
        line = {"event": event, "worker": worker_view(state, event.get("hostname"))}
        if "uuid" in event:
            line["task"] = task_view(state, event["uuid"])
        print(json.dumps(line, default=repr), flush=True)

    with app.connection_for_read() as connection:
        receiver = Receiver(connection, handlers={"*": on_event})

        def stop_when_stdin_closes():
            sys.stdin.read()
            receiver.should_stop = True

        threading.Thread(target=stop_when_stdin_closes, daemon=True).start()
        receiver.capture(limit=None, timeout=None, wakeup=True)


if __name__ == "__main__":
    main()
