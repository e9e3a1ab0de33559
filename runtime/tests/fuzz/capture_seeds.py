"""Captures real Celery 5.x messages and results from Redis (db 14) as fuzz seeds.

Run with the project's Python: .venv/bin/python runtime/tests/fuzz/capture_seeds.py runtime/tests/fuzz/seeds
"""
import json, os, sys, uuid, datetime, decimal
import redis
from celery import Celery, chain, chord, group

out = sys.argv[1]
db = 14
url = f"redis://127.0.0.1:6379/{db}"
r = redis.Redis(host="127.0.0.1", port=6379, db=db)
app = Celery("seeds", broker=url, backend=url)
q = "fuzzseeds-" + uuid.uuid4().hex[:8]
r.delete(q)

@app.task(name="tasks.add")
def add(x, y): return x + y

sent = [
    ("plain", lambda: app.send_task("tasks.add", args=(2, 3), kwargs={"z": "\u00fc"}, queue=q)),
    ("eta_expires_priority", lambda: app.send_task("tasks.add", args=(1, 1), countdown=30, expires=120, priority=5, queue=q)),
    ("time_limits", lambda: app.send_task("tasks.add", args=(1, 2), soft_time_limit=1, time_limit=3, queue=q)),
    ("kombu_types", lambda: app.send_task("tasks.add", args=(datetime.datetime(2024,1,2,3,4,5), datetime.date(2024,1,2), uuid.UUID(int=7), decimal.Decimal("1.5"), b"bytes"), queue=q)),
    ("link", lambda: add.apply_async((1, 2), link=add.s(10), link_error=add.si(0, 0), queue=q)),
    ("chain", lambda: chain(add.s(1, 1), add.s(2), add.s(3)).apply_async(queue=q)),
    ("custom_headers", lambda: app.send_task("tasks.add", args=(1, 2), headers={"tenant": "acme", "nested": {"a": [1, None]}}, queue=q)),
    ("nested_args", lambda: app.send_task("tasks.add", args=([1, [2, [3]]], {"k": {"l": None}}), kwargs={"flag": True, "n": -1.5}, queue=q)),
]
for name, send in sent:
    send()
    raw = r.rpop(q) or r.rpop(q + "\x06\x163")
    with open(os.path.join(out, f"envelope_{name}.json"), "wb") as f:
        f.write(raw)

# Results as the Redis backend stores them.
def stored(name, tid, fn):
    fn(tid)
    with open(os.path.join(out, f"result_{name}.json"), "wb") as f:
        f.write(r.get(f"celery-task-meta-{tid}"))
stored("success", str(uuid.uuid4()), lambda t: app.backend.store_result(t, {"a": [1, 2.5, None], "s": "\u00fc"}, "SUCCESS"))
try:
    raise ValueError("bad value", 3)
except ValueError as exc:
    stored("failure", str(uuid.uuid4()), lambda t: app.backend.mark_as_failure(t, exc, traceback="Traceback (most recent call last):\n  ...\nValueError: bad value"))
stored("retry", str(uuid.uuid4()), lambda t: app.backend.mark_as_retry(t, KeyError("k")))
stored("started", str(uuid.uuid4()), lambda t: app.backend.store_result(t, {"pid": 1, "hostname": "w@h"}, "STARTED"))
stored("progress", str(uuid.uuid4()), lambda t: app.backend.store_result(t, {"done": 3}, "PROGRESS"))

# Pidbox commands, as kombu's Mailbox publishes them (the body inside the envelope).
mailbox = app.control.mailbox
for name, (method, args, dest) in {
    "ping": ("ping", {}, ["w1@vm"]),
    "revoke": ("revoke", {"task_id": ["a", "b"], "terminate": False, "signal": "SIGTERM"}, None),
    "rate_limit": ("rate_limit", {"task_name": "tasks.add", "rate_limit": "10/m"}, None),
}.items():
    body = {"method": method, "arguments": args, "destination": dest, "pattern": None, "matcher": None}
    if name == "ping":
        body.update({"ticket": str(uuid.uuid4()), "reply_to": {"exchange": "reply.celery.pidbox", "routing_key": str(uuid.uuid4())}})
    with open(os.path.join(out, f"pidbox_{name}.json"), "w") as f:
        json.dump(body, f)
print("captured")
