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

A call with "via": "canvas" sends the workflow in "canvas", built of such signatures and

    {"chain": [...]}, {"group": [...]}, {"chord": [...header], "body": ...}

as `chain(...).apply_async()`, `group(...)()` and `chord(header)(body)`; every task in it
gets the call's options under its own. A group's result is its GroupResult, whose get()
is the list of values.

A call with "via": "restore_group" reads the group saved under "group_id" with
`GroupResult.restore(group_id)`; its result is the restored group's get().

Values tagged {"$date": "2024-01-02"}, {"$datetime": "..."} and {"$decimal": "0.1"} are
sent as Python date, datetime and Decimal objects (kombu wraps them in its
{"__type__": ...} envelope), and
{"$signature": {...}} (in options too: link, link_error) as a Celery signature.

A call marked "terminate" is revoked with AsyncResult.revoke(terminate=True) as soon as
its state is STARTED (the task must track it): the worker running it stops it.

Sends every call, revokes those marked "revoke" (AsyncResult.revoke(), a broadcast to
every worker), then polls each AsyncResult's state until all are ready, and prints

    {"calls": [{"name", "id", "sent_at", "states": ["PENDING", "STARTED", ...],
                "result": ... | "exception": {"type", "module", "message", "args",
                                              "is_value_error"},
                "meta": {"traceback", "name", "args", "kwargs", "worker", "retries",
                         "queue", "group_id", "parent_id", "parent"} | null}]}

where "meta" is what the AsyncResult reads from the stored result (its `traceback`,
and the fields `result_extended` adds; `group_id` and `parent_id` from the stored meta,
`parent` the id of `AsyncResult.parent`), null for a group.

where a date, datetime or Decimal in a result is tagged the same way, so the tests can tell a
Python datetime from a string.
"""

import json
import sys
import time
from datetime import date, datetime, timezone
from decimal import Decimal

from celery import chain, chord, group, states
from celery.result import GroupResult, ResultSet

from interop_app import app


def decode(value):
    if isinstance(value, dict):
        if set(value) == {"$signature"}:
            return app.signature(decode(value["$signature"]))
        if set(value) == {"$date"}:
            return date.fromisoformat(value["$date"])
        if set(value) == {"$datetime"}:
            return datetime.fromisoformat(value["$datetime"])
        if set(value) == {"$decimal"}:
            return Decimal(value["$decimal"])
        return {key: decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode(item) for item in value]
    return value


def encode(value):
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, dict):
        return {key: encode(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    return value


def build(node, options):
    """The signature of one canvas node, every task in it given `options` under its own."""
    if "chain" in node:
        return chain(*[build(step, options) for step in node["chain"]])
    if "group" in node:
        return group(*[build(member, options) for member in node["group"]])
    if "chord" in node:
        return chord([build(part, options) for part in node["chord"]], build(node["body"], options))
    return app.signature(
        node["task"],
        args=decode(node.get("args", [])),
        kwargs=decode(node.get("kwargs", {})),
        immutable=node.get("immutable", False),
    ).set(**{**options, **decode(node.get("options", {}))})


def send(call):
    args = decode(call.get("args", []))
    kwargs = decode(call.get("kwargs", {}))
    options = decode(call.get("options", {}))
    via = call.get("via", "send_task")
    if via == "chain":
        return build({"chain": call["steps"]}, options).apply_async()
    if via == "canvas":
        node = call["canvas"]
        if "chord" in node:
            # chord(header)(body), as the Celery documentation writes it.
            header = [build(part, options) for part in node["chord"]]
            return chord(header)(build(node["body"], options))
        return build(node, options)()
    if via == "restore_group":
        restored = GroupResult.restore(call["group_id"], app=app)
        if restored is None:
            raise LookupError(f"no group saved under {call['group_id']}")
        return restored
    if via == "apply_async":
        return app.tasks[call["task"]].apply_async(args, kwargs, **options)
    return app.send_task(call["task"], args, kwargs, **options)


def meta_of(result):
    """What a caller reads of a task's stored result besides its value."""
    if isinstance(result, ResultSet):
        return None
    # AsyncResult has no property for these two; they are in the stored meta.
    stored = result._get_task_meta()
    return {
        "traceback": result.traceback,
        "name": result.name,
        "args": encode(result.args),
        "kwargs": encode(result.kwargs),
        "worker": result.worker,
        "retries": result.retries,
        "queue": result.queue,
        "group_id": stored.get("group_id"),
        "parent_id": stored.get("parent_id"),
        "parent": result.parent.id if result.parent is not None else None,
    }


def state_of(result):
    """AsyncResult.state; for a group, SUCCESS or FAILURE once every member is ready."""
    if isinstance(result, ResultSet):
        if not result.ready():
            return states.PENDING
        return states.SUCCESS if result.successful() else states.FAILURE
    return result.state


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
            state = state_of(result)
            if not seen or seen[-1] != state:
                seen.append(state)
                if state == states.STARTED and entry[0].get("terminate"):
                    result.revoke(terminate=True)
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
        observed["meta"] = meta_of(result)
        report.append(observed)
    json.dump({"calls": report}, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
