"""The Python half of the soak's mixed fleet (`cargo run --release --example soak`): a
plain Celery 5 app with the one task the soak sends, `soak.record`, as the Celerity worker
declares it: acknowledged late, result ignored. Each run adds one to the task's id in a
Redis hash, `soak-<run>-python`, so the soak counts every execution, repeats included.

Configured from the environment, as the soak starts it:

    SOAK_BROKER               broker URL (redis://..., amqp://...)
    SOAK_COUNTER              the Redis URL of the hashes
    SOAK_VISIBILITY_TIMEOUT   seconds (Redis brokers), the Celerity worker's too
"""

import os
import time

import redis
from celery import Celery

app = Celery("soak_tasks", broker=os.environ.get("SOAK_BROKER", "redis://127.0.0.1:6379/11"))
app.conf.update(
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    # kombu reads the visibility timeout only from here, never from the URL.
    broker_transport_options={
        "visibility_timeout": int(os.environ.get("SOAK_VISIBILITY_TIMEOUT", "3600")),
    },
)

counter = redis.Redis.from_url(os.environ.get("SOAK_COUNTER", "redis://127.0.0.1:6379/11"))


@app.task(name="soak.record", bind=True, acks_late=True, ignore_result=True)
def record(self, run, ms):
    time.sleep(ms / 1000)
    return counter.hincrby(f"soak-{run}-python", self.request.id, 1)


if __name__ == "__main__":
    # `python soak_tasks.py delete-queue NAME`: how the soak leaves no queue behind, on
    # either broker (kombu deletes a Redis queue's list, priority lists and binding).
    import sys

    from kombu import Queue

    if sys.argv[1:2] != ["delete-queue"] or len(sys.argv) != 3:
        raise SystemExit("usage: soak_tasks.py delete-queue NAME")
    with app.connection_for_write() as connection:
        Queue(sys.argv[2]).bind(connection.default_channel).delete()
