"""Sends a remote-control command through Celery 5 over RabbitMQ, for
`runtime/tests/amqp_broker.rs`: what `celery inspect ping` and `app.control.revoke`
do, aimed at a Celerity worker.

Usage: control_amqp.py BROKER_URL NODE ping
       control_amqp.py BROKER_URL NODE revoke TASK_ID

`ping` prints the answers of `app.control.ping(destination=[NODE])` as JSON; `revoke`
broadcasts the revoke (no answer awaited) and prints `[]`.
"""

import json
import sys

from celery import Celery


def main():
    broker, node, command = sys.argv[1], sys.argv[2], sys.argv[3]
    app = Celery("control", broker=broker)
    if command == "ping":
        answers = app.control.ping(destination=[node], timeout=5)
    elif command == "revoke":
        app.control.revoke(sys.argv[4])
        answers = []
    else:
        sys.exit(f"unknown command {command!r}")
    print(json.dumps(answers))


if __name__ == "__main__":
    main()
