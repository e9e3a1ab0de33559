"""Mistakes `mypy --strict` must refuse, each on the line its comment names."""

from celery import Celery  # type: ignore[import-untyped, unused-ignore]

from shop_tasks import (
    EmailAddress,
    EmailReceipt,
    OrderSummary,
    TasksRegistry,
    TasksWorker,
)

app = Celery("shop")
tasks = TasksRegistry(app)
worker = TasksWorker(app)

# A wrong argument type: an address is an EmailAddress, not a string.
tasks.send_email("ada@example.com", "Hi", "Body")

# A wrong result type: `ping` returns a string.
count: int = tasks.ping().get()

# A workflow step that does not take the previous result: `send_email_s` wants an
# EmailAddress first, and the summary is an OrderSummary.
tasks.summarize_orders_sig([]) | tasks.send_email_s("Hi", "Body")


# A handler whose parameters are not the task's arguments.
@worker.email_summary
def email_summary(summary: str, to: EmailAddress) -> EmailReceipt:
    raise NotImplementedError(summary, to, OrderSummary)
