"""Sends every task of schemas/tasks.yaml to a worker through the Python module generated
from it (`celerity-codegen python schemas/tasks.yaml -o shop_tasks.py`), checks that each
result arrives as the schema's type, and prints what it received as JSON, one key per
call, for the Rust test to compare.

Configured from the environment, as the Rust tests start it:

    CELERITY_INTEROP_BROKER    broker URL (redis://..., amqp://...)
    CELERITY_INTEROP_BACKEND   result backend URL (redis://..., rpc://)
    CELERITY_INTEROP_QUEUE     the queue the worker consumes
"""

import datetime
import json
import os
import typing
import uuid

from celery import Celery  # type: ignore[import-untyped]

from shop_tasks import (
    EmailAddress,
    EmailReceipt,
    Order,
    OrderLine,
    OrderOutcome,
    OrderStatus,
    OrderSummary,
    Report,
    ReportFormat,
    Role,
    TasksRegistry,
    User,
    chord,
    group,
)

WAIT = 30.0

app = Celery(
    "shop_client",
    broker=os.environ["CELERITY_INTEROP_BROKER"],
    backend=os.environ["CELERITY_INTEROP_BACKEND"],
)
tasks = TasksRegistry(app).options(queue=os.environ["CELERITY_INTEROP_QUEUE"])
ada = EmailAddress(email="ada@example.com")
ops = EmailAddress(email="ops@example.com", name="Operations")
seen: dict[str, object] = {}


T = typing.TypeVar("T")


def typed(value: T, kind: type) -> T:
    """`value`, checked to be a `kind` at run time as mypy checks its type statically."""
    assert isinstance(value, kind), f"expected {kind.__name__}, got {value!r}"
    return value


pong = typed(tasks.ping().get(timeout=WAIT), str)
seen["ping"] = pong

sent = tasks.send_email(ada, "Hi", "Body", cc=[ops])
receipt = typed(sent.get(timeout=WAIT), EmailReceipt)
queued_at = typed(receipt.queued_at, datetime.datetime)
assert queued_at.tzinfo is not None
seen["send_email"] = {
    "accepted": receipt.accepted,
    "message_id_is_the_task_id": receipt.message_id == f"<{sent.id}@shop.example>",
}

seen["cleanup_sessions"] = typed(tasks.cleanup_sessions(dry_run=True).get(timeout=WAIT), int)

user = typed(
    tasks.create_user("grace@example.com", role=Role.ADMIN, display_name="Grace").get(
        timeout=WAIT
    ),
    User,
)
typed(user.id, uuid.UUID)
typed(user.created_on, datetime.date)
seen["create_user"] = {"email": user.email, "role": typed(user.role, Role).value}

order = Order(
    id=uuid.uuid4(),
    customer_id=user.id,
    lines=[
        OrderLine(sku="TEA-01", quantity=3, unit_price_cents=450),
        OrderLine(sku="BO-KETTLE", quantity=1, unit_price_cents=3000),
    ],
    metadata={"channel": "web"},
)
outcome = typed(tasks.process_order(order, notify=False).get(timeout=WAIT), OrderOutcome)
assert outcome.order_id == order.id, (outcome.order_id, order.id)
seen["process_order"] = {
    "status": typed(outcome.status, OrderStatus).value,
    "total_cents": outcome.total_cents,
    "warnings": outcome.warnings,
}

report = typed(
    tasks.generate_report(
        "r",
        datetime.date(2026, 1, 1),
        format=ReportFormat.JSON,
        until=datetime.date(2026, 1, 3),
        filters={"region": "eu"},
    ).get(timeout=WAIT),
    Report,
)
seen["generate_report"] = {
    "rows": report.rows,
    "format": typed(report.format, ReportFormat).value,
    "orders": report.totals["orders"],
    "content": typed(report.content, bytes).decode(),
}

alert = typed(tasks.alert_ops("t-1").get(timeout=WAIT), str)
seen["alert_ops"] = alert

summary = typed(tasks.summarize_orders([outcome, outcome]).get(timeout=WAIT), OrderSummary)
seen["summarize_orders"] = {"orders": summary.orders, "total_cents": summary.total_cents}

mailed = typed(tasks.email_summary(summary, ops).get(timeout=WAIT), EmailReceipt)
seen["email_summary"] = mailed.accepted

# Typed canvas: a chain, and a chord whose body is a chain, run by the worker.
chained = tasks.summarize_orders_sig([outcome]) | tasks.email_summary_s(ops)
seen["chain"] = typed(chained.apply_async().get(timeout=WAIT), EmailReceipt).accepted
orders = group(tasks.process_order_sig(order, notify=False) for _ in range(3))
body = tasks.summarize_orders_s()
totals = typed(chord(orders, body).apply_async().get(timeout=WAIT), OrderSummary)
seen["chord"] = {"orders": totals.orders, "total_cents": totals.total_cents}

try:
    tasks.send_email(EmailAddress(email="nobody"), "Hi", "").get(timeout=WAIT)
    seen["failure"] = None
except Exception as error:  # noqa: BLE001 (any failure is reported)
    seen["failure"] = {"type": type(error).__name__, "message": str(error)}

print(json.dumps(seen, sort_keys=True))
