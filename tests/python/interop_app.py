"""The Python side of the Celery interop suite: a plain Celery 5 app whose tasks have the
wire names, arguments and results of tests/interop/interop.yaml, so that Celerity can
send them to a Python worker and a Celerity worker can run what Python sends.

Configured from the environment, as the Rust tests start it:

    CELERITY_INTEROP_BROKER    broker URL (redis://..., amqp://...)
    CELERITY_INTEROP_BACKEND   result backend URL (redis://..., rpc://)
    CELERITY_INTEROP_QUEUE     the queue tasks go to and the worker consumes
"""

import os
import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from celery import Celery

QUEUE = os.environ.get("CELERITY_INTEROP_QUEUE", "interop")

app = Celery(
    "interop_app",
    broker=os.environ.get("CELERITY_INTEROP_BROKER", "redis://127.0.0.1:6379/15"),
    backend=os.environ.get("CELERITY_INTEROP_BACKEND", "redis://127.0.0.1:6379/15"),
)
app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    # Results carry the task's name, args, kwargs, worker, retries and queue, as a
    # Celerity worker's do under --result-extended.
    result_extended=True,
    # Everything else stays at Celery's defaults: JSON, protocol 2, early acks.
)


class PaymentDeclined(Exception):
    """A card was refused (interop.charge)."""


class GatewayTimeout(Exception):
    """The reason interop.flaky records for each retry."""


def _as_date(value):
    # A Celery client sends kombu's {"__type__": "date"} envelope, which arrives as a
    # date; Celerity sends the ISO text.
    return value if isinstance(value, date) else date.fromisoformat(value)


def _as_datetime(value):
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@app.task(name="interop.add")
def add(x, y):
    return x + y


@app.task(name="interop.greet")
def greet(name, greeting="Hello", punctuation="!"):
    return f"{greeting}, {name}{punctuation}"


@app.task(name="interop.profile")
def profile(customer):
    joined = _as_date(customer["joined"])
    last_seen = _as_datetime(customer["last_seen"])
    address = customer.get("address")
    return {
        "greeting": f"Hello, {customer['name']}!",
        "tag_count": len(customer["tags"]),
        "city": address["city"] if address else None,
        "total_score": sum(customer["scores"].values()),
        "member_for_days": (last_seen.date() - joined).days,
        "next_visit": last_seen + timedelta(days=1),
    }


@app.task(name="interop.charge")
def charge(card, amount_cents):
    if amount_cents < 1:
        raise ValueError(f"amount must be positive, got {amount_cents}")
    if card.endswith("0002"):
        raise PaymentDeclined(f"card {card} was declined")
    return f"charged {amount_cents} to card ending {card[-4:]}"


@app.task(name="interop.total")
def total(prices):
    for price in prices:
        if not isinstance(price, Decimal):
            raise TypeError(f"expected a Decimal, got {price!r}")
    return sum(prices, Decimal(0))


@app.task(name="interop.quota")
def quota(account, used):
    raise ValueError(f"account {account} over quota", used)


@app.task(name="interop.crash")
def crash(reason):
    raise RuntimeError(reason)


@app.task(name="interop.flaky", bind=True, max_retries=3)
def flaky(self, failures):
    if self.request.retries < failures:
        attempt = self.request.retries + 1
        raise self.retry(countdown=0.5, exc=GatewayTimeout(f"attempt {attempt} timed out"))
    return self.request.retries


@app.task(name="interop.slow", track_started=True)
def slow(seconds):
    time.sleep(seconds)
    return "python"


@app.task(name="interop.tag")
def tag(n):
    # Long enough that a burst of these spreads over every worker on the queue.
    time.sleep(0.05)
    return {"n": n, "worker": "python"}


@app.task(name="interop.timing", bind=True)
def timing(self):
    return {"eta": self.request.eta, "ran_at": datetime.now(timezone.utc)}


@app.task(name="interop.tsum")
def tsum(xs):
    return sum(xs)


@app.task(name="interop.tally")
def tally(items, key):
    # Counted where the tests can read it: the Redis of the result backend (chords,
    # which this task ends, need a Redis backend anyway).
    with app.backend.client.pipeline() as pipe:
        pipe.incr(key).expire(key, 600).execute()
    return {"items": items, "worker": "python"}


@app.task(name="interop.scheduled", bind=True)
def scheduled(self, label):
    # What Celery beat (and django-celery-beat) sent it with, read as Celery tasks do.
    return {
        "label": label,
        "schedule": getattr(self.request, "periodic_task_name", None)
        if getattr(self.request, "celery_beat_task", False)
        else None,
        "worker": "python",
    }


# A task of the Python service that the schema does not declare: Celerity sends it
# through an untyped signature (`Sig::from_signature`).
@app.task(name="pyonly.mul")
def mul(x, y):
    return x * y
