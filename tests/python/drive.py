"""Sends tasks as Python code does and reports what Python observes, for the Rust tests.

Reads a plan from stdin:

    {"timeout": 30,
     "calls": [{"name": "...", "task": "interop.add", "via": "send_task" | "apply_async",
                "args": [...], "kwargs": {...},
                "options": {"queue": "...", "countdown": 2, "expires": 1, "priority": 9},
                "revoke": false}]}

A call with "via": "chain" sends `chain(*steps)`, each step
{"task": "...", "args": [...], "immutable": false, "options": {...}} a signature with the
call's options and its own; its result is the chain's (the last step's).

Values tagged {"$date": "2024-01-02"} and {"$datetime": "..."} are sent as Python date
and datetime objects (kombu wraps them in its {"__type__": ...} envelope), and
{"$signature": {...}} (in options too: link, link_error) as a Celery signature.

Sends every call, revokes those marked "revoke" (AsyncResult.revoke(), a broadcast to
every worker), then polls each AsyncResult's state until all are ready, and prints

    {"calls": [{"name", "id", "sent_at", "states": ["PENDING", "STARTED", ...],
                "result": ... | "exception": {"type", "module", "message", "args",
                                              "is_value_error"}}]}

where a date or datetime in a result is tagged the same way, so the tests can tell a
Python datetime from a string.
"""

import json
import sys
import time
from datetime import date, datetime, timezone

from celery import chain, states

from interop_app import app


def decode(value):
    if isinstance(value, dict):
        if set(value) == {"$signature"}:
            return app.signature(decode(value["$signature"]))
        if set(value) == {"$date"}:
            return date.fromisoformat(value["$date"])
        if set(value) == {"$datetime"}:
            return datetime.fromisoformat(value["$datetime"])
        return {key: decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode(item) for item in value]
    return value


def encode(value):
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, dict):
        return {key: encode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    return value


def send(call):
    args = decode(call.get("args", []))
    kwargs = decode(call.get("kwargs", {}))
    options = decode(call.get("options", {}))
    if call.get("via") == "chain":
        steps = [
            app.signature(
                step["task"],
                args=decode(step.get("args", [])),
                immutable=step.get("immutable", False),
            ).set(**{**options, **decode(step.get("options", {}))})
            for step in call["steps"]
        ]
        return chain(*steps).apply_async()
    if call.get("via", "send_task") == "apply_async":
        return app.tasks[call["task"]].apply_async(args, kwargs, **options)
    return app.send_task(call["task"], args, kwargs, **options)


def main():
    plan = json.load(sys.stdin)
    sent = []
    for call in plan["calls"]:
        sent_at = datetime.now(timezone.utc).isoformat()
        sent.append((call, send(call), sent_at, []))
    for call, result, _, _ in sent:
        if call.get("revoke"):
            result.revoke()

    deadline = time.monotonic() + plan.get("timeout", 30)
    waiting = list(sent)
    while waiting and time.monotonic() < deadline:
        for entry in list(waiting):
            _, result, _, seen = entry
            state = result.state
            if not seen or seen[-1] != state:
                seen.append(state)
            if state in states.READY_STATES:
                waiting.remove(entry)
        time.sleep(0.02)

    report = []
    for call, result, sent_at, seen in sent:
        observed = {"name": call["name"], "id": result.id, "sent_at": sent_at, "states": seen}
        try:
            observed["result"] = encode(result.get(timeout=1))
        except Exception as exc:  # what the caller's code would catch
            observed["exception"] = {
                "type": type(exc).__name__,
                "module": type(exc).__module__,
                "message": str(exc),
                "args": encode(list(exc.args)),
                "is_value_error": isinstance(exc, ValueError),
            }
        report.append(observed)
    json.dump({"calls": report}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
