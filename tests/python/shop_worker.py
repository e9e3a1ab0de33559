"""The shop's tasks in Python, written against the module generated from
schemas/tasks.yaml (`celerity-codegen python schemas/tasks.yaml -o shop_tasks.py`): the
same behaviour as the Celerity shop (src/components.rs), task for task, so that the shop's
Rust round trip runs unchanged against it.

Configured from the environment, as the Rust tests start it:

    CELERITY_INTEROP_BROKER    broker URL (redis://..., amqp://...)
    CELERITY_INTEROP_BACKEND   result backend URL (redis://..., rpc://)
"""

import datetime
import os
import threading
import uuid

from celery import Celery, current_task  # type: ignore[import-untyped]

from shop_tasks import (
    EmailAddress,
    EmailReceipt,
    JsonValue,
    Order,
    OrderOutcome,
    OrderStatus,
    OrderSummary,
    Report,
    ReportFormat,
    Role,
    TasksRegistry,
    TasksWorker,
    User,
)

app = Celery(
    "shop_worker",
    broker=os.environ.get("CELERITY_INTEROP_BROKER", "redis://127.0.0.1:6379/15"),
    backend=os.environ.get("CELERITY_INTEROP_BACKEND", "redis://127.0.0.1:6379/15"),
)
app.conf.broker_connection_retry_on_startup = True
worker = TasksWorker(app)
tasks = TasksRegistry(app)


class InvalidAddress(Exception):
    """An address without `@` (tasks.send_email)."""


class UserExists(Exception):
    """A second account for one email (tasks.create_user)."""


_users: dict[str, User] = {}
_users_lock = threading.Lock()


def _deliver(recipients: list[EmailAddress], subject: str) -> EmailReceipt:
    for recipient in recipients:
        if "@" not in recipient.email:
            raise InvalidAddress(f"`{recipient.email}` is not an email address")
    return EmailReceipt(
        message_id=f"<{current_task.request.id}@shop.example>",
        accepted=[recipient.email for recipient in recipients],
        queued_at=datetime.datetime.now(datetime.UTC),
    )


@worker.ping
def ping() -> str:
    return "pong"


@worker.send_email
def send_email(
    to: EmailAddress,
    subject: str,
    body: str,
    cc: list[EmailAddress],
    tags: dict[str, str],
) -> EmailReceipt:
    return _deliver([to, *cc], subject)


@worker.email_summary
def email_summary(summary: OrderSummary, to: EmailAddress) -> EmailReceipt:
    subject = (
        f"{summary.orders} orders, {summary.accepted} accepted,"
        f" {summary.total_cents / 100:.2f} in total"
    )
    return _deliver([to], subject)


@worker.alert_ops
def alert_ops(task_id: str, channel: str) -> str:
    return f"{channel}: task {task_id} failed"


@worker.cleanup_sessions
def cleanup_sessions(max_idle_minutes: int, dry_run: bool) -> int:
    # This worker keeps no sessions.
    return 0


@worker.create_user
def create_user(email: str, role: Role, display_name: str | None) -> User:
    with _users_lock:
        if email in _users:
            raise UserExists(f"a user with email {email} already exists")
        user = User(
            id=uuid.uuid4(),
            email=email,
            role=role,
            created_on=datetime.datetime.now(datetime.UTC).date(),
        )
        _users[email] = user
        return user


@worker.process_order
def process_order(order: Order, notify: bool) -> OrderOutcome:
    total_cents = sum(line.quantity * line.unit_price_cents for line in order.lines)
    warnings = []
    if order.shipping is None:
        warnings.append("no shipping address: collection in store")
    if not order.lines or any(line.quantity == 0 for line in order.lines):
        status = OrderStatus.REJECTED
    elif any(line.sku.startswith("BO-") for line in order.lines):
        status = OrderStatus.BACKORDERED
    else:
        status = OrderStatus.ACCEPTED
    email = order.metadata.get("email")
    if notify and email is not None and status is OrderStatus.ACCEPTED:
        tasks.send_email(EmailAddress(email=email), f"Order {order.id} accepted", "")
    return OrderOutcome(
        order_id=order.id, status=status, total_cents=total_cents, warnings=warnings
    )


@worker.summarize_orders
def summarize_orders(outcomes: list[OrderOutcome]) -> OrderSummary:
    return OrderSummary(
        orders=len(outcomes),
        accepted=sum(o.status is OrderStatus.ACCEPTED for o in outcomes),
        total_cents=sum(o.total_cents for o in outcomes),
        warnings=[warning for o in outcomes for warning in o.warnings],
    )


@worker.generate_report
def generate_report(
    name: str,
    since: datetime.date,
    format: ReportFormat,
    until: datetime.date | None,
    filters: JsonValue,
) -> Report:
    until = until or datetime.datetime.now(datetime.UTC).date()
    if until < since:
        raise ValueError(f"report range is empty: {since} is after {until}")
    days = (until - since).days + 1
    region = filters.get("region", "all") if isinstance(filters, dict) else "all"
    lines = ["day,region,orders"]
    for offset in range(days):
        day = since + datetime.timedelta(days=offset)
        lines.append(f"{day.isoformat()},{region},{offset * 3}")
    return Report(
        name=name,
        format=format,
        rows=days,
        totals={"orders": float(sum(day * 3 for day in range(days)))},
        content=("\n".join(lines) + "\n").encode(),
    )
