"""A client of the module generated from schemas/tasks.yaml, using the parts of its API
the shop's client and worker (tests/python/shop_client.py, shop_worker.py) leave out:
`mypy --strict` must accept every line."""

import datetime
import uuid

from celery import Celery  # type: ignore[import-untyped, unused-ignore]

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

app = Celery("shop", broker="memory://", backend="cache+memory://")
tasks = TasksRegistry(app)
ops = EmailAddress(email="ops@shop.example", name="Operations")


def client() -> None:
    receipt: EmailReceipt = tasks.send_email(ops, "Hi", "Body", cc=[ops]).get(timeout=10)
    queued: datetime.datetime = receipt.queued_at
    print(queued.isoformat(), receipt.accepted)

    user: User = tasks.options(queue="shop-1", countdown=5).create_user(
        "grace@example.com", role=Role.ADMIN, display_name="Grace"
    ).get()
    user_id: uuid.UUID = user.id
    print(user_id.hex, user.created_on.isoformat())

    order = Order(
        id=uuid.uuid4(),
        customer_id=user.id,
        lines=[OrderLine(sku="TEA-01", quantity=3, unit_price_cents=450)],
    )
    outcome: OrderOutcome = tasks.process_order(order, notify=False).get()
    if outcome.status is OrderStatus.BACKORDERED:
        print("later")

    report: Report = tasks.generate_report(
        "sales", datetime.date(2026, 1, 1), format=ReportFormat.PDF, filters={"region": "eu"}
    ).get()
    content: bytes = report.content
    print(len(content), report.totals["orders"] + 1.5)
    removed: int = tasks.cleanup_sessions(dry_run=True).get()
    print(removed + 1)


def workflows(orders: list[Order]) -> None:
    report = tasks.summarize_orders_sig([]) | tasks.email_summary_s(ops)
    receipt: EmailReceipt = report.apply_async().get()
    print(receipt.message_id)

    batch = group(tasks.process_order_sig(order) for order in orders)
    outcomes: list[OrderOutcome] = batch.apply_async().get()
    print(len(outcomes))

    mailed = chord(batch, tasks.summarize_orders_s() | tasks.email_summary_s(ops))
    print(mailed.apply_async().get().accepted)

    summary = (batch | tasks.summarize_orders_s()).link_error(tasks.alert_ops_s())
    totals: OrderSummary = summary.delay().get()
    print(totals.total_cents)

    pinged = tasks.ping_sig() | tasks.ping_sig().immutable()
    answer: str = pinged.delay().get()
    print(answer)
