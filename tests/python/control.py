"""Runs Celery's inspect and control commands as Celery's tools send them, and reports
every answer, for the interop suite (tests/interop/cases.rs).

Reads a plan from stdin:

    {"timeout": 5, "destination": ["w1@host", "py-1@host"],
     "steps": [{"name": "stats", "inspect": "stats"},
               {"name": "items", "inspect": "registered", "args": ["rate_limit"]},
               {"name": "grow", "control": "pool_grow", "kwargs": {"n": 2}},
               {"name": "bye", "control": "shutdown", "reply": false},
               {"sleep": 0.5}]}

An "inspect" step calls `app.control.inspect(destination, timeout).<method>(*args,
**kwargs)` and reports its answer, `{node: reply}`; a "control" step calls
`app.control.<method>(*args, destination=..., reply=True, timeout=..., **kwargs)` and
reports its answers merged into one `{node: reply}` (`{}` when "reply" is false: the
command is broadcast and nothing awaited, as Flower sends `shutdown`). A step's own
"destination" wins over the plan's. Each waits for as many answers as it has
destinations, then returns.

Prints {"<name>": <answer>, ...} as JSON.
"""

import json
import sys
import time

from interop_app import app


def run(step, plan):
    destination = step.get("destination", plan.get("destination"))
    timeout = step.get("timeout", plan.get("timeout", 5))
    limit = len(destination) if destination else None
    args = step.get("args", [])
    kwargs = step.get("kwargs", {})
    if "inspect" in step:
        inspect = app.control.inspect(destination=destination, timeout=timeout, limit=limit)
        return getattr(inspect, step["inspect"])(*args, **kwargs) or {}
    reply = step.get("reply", True)
    answers = getattr(app.control, step["control"])(
        *args, destination=destination, reply=reply, timeout=timeout, limit=limit, **kwargs
    )
    merged = {}
    for answer in answers or []:
        merged.update(answer)
    return merged


def main():
    plan = json.load(sys.stdin)
    report = {}
    for step in plan["steps"]:
        if "sleep" in step:
            time.sleep(step["sleep"])
            continue
        report[step["name"]] = run(step, plan)
    json.dump(report, sys.stdout, default=repr)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
