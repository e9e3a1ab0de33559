"""Python Celery's side of the benchmark: the same workload as `examples/bench`, measured
the same way, on a Celery 5 prefork worker of concurrency 2.

Run by the Rust benchmark (`cargo run --release --example bench`), which prints both
sides in one table; it can also run alone:

    .venv/bin/python bench/celery_bench.py --broker redis://127.0.0.1:6379/12 \
        --backend redis://127.0.0.1:6379/12 --tasks 10000

It starts `celery worker -P prefork -c 2` on a queue of its own, measures

- the publish rate from this client: `apply_async` one after another, then the same loop
  holding one producer (Celery has no batch publish), each into a queue no one consumes,
  deleted afterwards;
- end to end: N `tasks.ping` published, then every result read back from the backend;
  the time runs from the first publish to the latest `date_done` the worker stored;
- the round-trip latency of sequential `apply_async(...).get()` calls;
- the worker's memory: VmRSS when idle and VmHWM after the run, summed over the prefork
  parent and its children (shared pages count once per process);
- Redis commands per task during the end-to-end run (INFO commandstats, server-wide),
  and the CPU time per task of the worker (parent and children), of Redis and of
  RabbitMQ (when it runs on this machine),

prints progress on stderr and one JSON line on stdout. The worker is stopped at the end,
whatever happens; the queues it used expire (RabbitMQ) or are deleted (Redis).

With `--held-tasks N` (Redis) it measures only the worker's memory per task held for its
countdown: N `tasks.ping` sent with countdown=3600 to the worker's queue, VmRSS (parent and
children) before and once the worker has taken them all, per task.

With `--chord-tasks N [--concurrency C]` (Redis) it measures only a chord: a prefork worker
of C processes (default 2), a warm-up chord of ten, then `chord(add.s(i, i) for i in
range(N))(tsum.s())`, timed from building it to the body's `date_done`, and the chord's
`celery-taskset-meta-<gid>*` keys left once the body's result is stored.

Configured for the worker through the environment: CELERY_BENCH_BROKER,
CELERY_BENCH_BACKEND, CELERY_BENCH_QUEUE.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

import celery
import redis
from celery import Celery, chord
from kombu import Queue

QUEUE = os.environ.get("CELERY_BENCH_QUEUE", "celery-bench")
# Unused queues disappear a minute after the run on RabbitMQ (Redis lists are deleted).
QUEUE_EXPIRES_MS = 60_000

# The prefork worker's processes, as in the figures Celerity is compared with.
WORKER_CONCURRENCY = 2

app = Celery(
    "celery_bench",
    broker=os.environ.get("CELERY_BENCH_BROKER", "redis://127.0.0.1:6379/12"),
    backend=os.environ.get("CELERY_BENCH_BACKEND", "redis://127.0.0.1:6379/12"),
)


def bench_queue(name, broker_url):
    """A queue as the benchmark declares it: expiring when unused on RabbitMQ."""
    if broker_url.startswith(("amqp", "pyamqp")):
        return Queue(name, queue_arguments={"x-expires": QUEUE_EXPIRES_MS})
    return Queue(name)


app.conf.update(
    task_default_queue=QUEUE,
    task_queues=[bench_queue(QUEUE, os.environ.get("CELERY_BENCH_BROKER", ""))],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    # Everything else at Celery's defaults: JSON, protocol 2, early acks, prefetch 4.
)


@app.task(name="tasks.ping")
def ping():
    return "pong"


# The chord row's tasks, named as the Rust side names its own (examples/bench/chord_tasks.rs).
@app.task(name="bench.add")
def add(x, y):
    return x + y


@app.task(name="bench.tsum")
def tsum(xs):
    return sum(xs)


def nearest_rank(sorted_times, q):
    """The smallest sample with at least a fraction q of the samples at or below it."""
    rank = -(-len(sorted_times) * q // 1)  # ceil
    return sorted_times[min(max(int(rank), 1), len(sorted_times)) - 1]


def log(message):
    print(f"[python] {message}", file=sys.stderr, flush=True)


# --- the worker -------------------------------------------------------------------------


def start_worker(queue, broker, backend, concurrency=WORKER_CONCURRENCY):
    env = dict(os.environ)
    env.update(
        CELERY_BENCH_BROKER=broker,
        CELERY_BENCH_BACKEND=backend,
        CELERY_BENCH_QUEUE=queue,
        # No __pycache__ left beside the script.
        PYTHONDONTWRITEBYTECODE="1",
        # Celery warns at length when its worker runs as root, as it does in containers.
        PYTHONWARNINGS="ignore:You're running the worker with superuser privileges",
    )
    command = [
        sys.executable, "-m", "celery", "-A", "celery_bench", "worker",
        "-P", "prefork", "-c", str(concurrency), "-Q", queue, "-n", f"{queue}@%h",
        "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning",
    ]
    here = os.path.dirname(os.path.abspath(__file__))
    # A session of its own, so the whole process group (prefork children too) is stopped;
    # its banner would mix with this script's JSON on stdout, its logs stay on stderr.
    return subprocess.Popen(
        command, cwd=here, env=env, start_new_session=True, stdout=subprocess.DEVNULL
    )


def stop_worker(worker):
    if worker.poll() is not None:
        return
    try:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        worker.wait()


def wait_until_ready(worker, queue, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the Celery worker exited with status {worker.returncode}")
        if app.control.ping(destination=[f"{queue}@{os.uname().nodename}"], timeout=0.5):
            return
    raise RuntimeError("the Celery worker did not answer a ping within a minute")


def process_tree(pid):
    """`pid` and its descendants."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    # The command name may hold spaces: the parent pid follows its ')'.
                    parents[int(entry)] = int(stat.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, frontier = [pid], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        tree += children
        frontier = children
    return tree


def memory_kb(pid, field):
    """The sum of `field` (VmRSS, VmHWM) in kB over `pid` and its descendants."""
    total = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/status") as status:
                for line in status:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_ns(pid):
    """CPU time so far of every thread of `pid` and its descendants, in nanoseconds."""
    total = 0
    for member in process_tree(pid):
        try:
            threads = os.listdir(f"/proc/{member}/task")
        except OSError:
            continue
        for thread in threads:
            try:
                with open(f"/proc/{member}/task/{thread}/schedstat") as schedstat:
                    total += int(schedstat.read().split()[0])
            except (OSError, IndexError, ValueError):
                pass
    return total


def process_named(name):
    """The first process whose command name is `name` (RabbitMQ's `beam.smp`), or None."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as comm:
                    if comm.read().strip() == name:
                        return int(entry)
            except OSError:
                pass
    return None


def thread_cpu_ns(pid):
    """CPU time so far of the threads of `pid` alone, in nanoseconds."""
    total = 0
    for thread in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{thread}/schedstat") as schedstat:
                total += int(schedstat.read().split()[0])
        except (OSError, IndexError, ValueError):
            pass
    return total


def redis_cpu_seconds(client):
    info = client.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


# --- measurements -----------------------------------------------------------------------


def delete_queue(name):
    broker = app.conf.broker_url
    if broker.startswith("redis"):
        # kombu's Redis transport deletes only what this process declared; these are the
        # keys of a queue on kombu's layout: the list, its priority buckets, the bindings.
        keys = [name] + [f"{name}\x06\x16{p}" for p in (3, 6, 9)]
        keys += [f"_kombu.binding.{name}", f"_kombu.binding_permanent.{name}"]
        client = redis.Redis.from_url(broker)
        client.delete(*keys)
        # Its binding to the default exchange (`<routing key>\x06\x16<pattern>\x06\x16<queue>`
        # in `_kombu.binding.<exchange>`), which would otherwise collect one per run.
        exchange = f"_kombu.binding.{app.conf.task_default_exchange or QUEUE}"
        stale = [m for m in client.smembers(exchange) if m.endswith(f"\x06\x16{name}".encode())]
        if stale:
            client.srem(exchange, *stale)
    else:
        with app.connection_for_write() as connection:
            bench_queue(name, broker).bind(connection.default_channel).delete()


# How long each publish-rate loop may run (the Rust side's limit too).
PUBLISH_TIME_LIMIT = 10.0


def publish_loop(n, queue, **options):
    """Up to `n` apply_async calls for at most PUBLISH_TIME_LIMIT: (tasks/s, sent)."""
    sent = 0
    start = time.perf_counter()
    while sent < n and time.perf_counter() - start < PUBLISH_TIME_LIMIT:
        ping.apply_async(queue=queue, **options)
        sent += 1
    return sent / (time.perf_counter() - start), sent


def publish_rates(n, queue):
    try:
        ping.apply_async(queue=queue)  # connects and declares before timing
        one = publish_loop(n, queue)
        log(f"publish one at a time: {one[0]:,.0f} tasks/s ({one[1]} sent)")
        with app.producer_or_acquire() as producer:
            held = publish_loop(n, queue, producer=producer)
        log(f"publish holding one producer: {held[0]:,.0f} tasks/s ({held[1]} sent)")
        return one, held
    finally:
        delete_queue(queue)


def command_stats(client):
    """Calls and microseconds of each command since Redis started (server-wide)."""
    return {
        name.removeprefix("cmdstat_"): (stats["calls"], stats["usec"])
        for name, stats in client.info("commandstats").items()
    }


def end_to_end(n, queue, stats_client, worker_pid):
    before = command_stats(stats_client) if stats_client else None
    redis_cpu = redis_cpu_seconds(stats_client) if stats_client else None
    worker_cpu = cpu_ns(worker_pid)
    rabbitmq = process_named("beam.smp") if app.conf.broker_url.startswith("amqp") else None
    rabbitmq_cpu = thread_cpu_ns(rabbitmq) if rabbitmq else None
    started_wall = datetime.now().astimezone()
    started = time.perf_counter()
    ids = [ping.apply_async(queue=queue).id for _ in range(n)]
    published = time.perf_counter() - started
    log(f"end to end: {n:,} published in {published:.1f} s; waiting for results")
    results = app.backend.client  # the Redis result backend's client
    pending = ids
    latest = None
    reads = 0
    failures = 0
    deadline = time.monotonic() + max(120.0, n / 100)
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} results missing after the deadline")
        still = []
        for chunk in range(0, len(pending), 1000):
            batch = pending[chunk : chunk + 1000]
            values = results.mget([app.backend.get_key_for_task(i) for i in batch])
            reads += 1
            for task_id, raw in zip(batch, values):
                meta = json.loads(raw) if raw else None
                if not meta or meta["status"] not in ("SUCCESS", "FAILURE", "REVOKED"):
                    still.append(task_id)
                    continue
                if meta["status"] != "SUCCESS" or meta["result"] != "pong" or not meta.get("date_done"):
                    failures += 1
                    continue
                done = datetime.fromisoformat(meta["date_done"])
                latest = done if latest is None or done > latest else latest
        pending = still
        if pending:
            time.sleep(0.05)
    worker_cpu = cpu_ns(worker_pid) - worker_cpu
    if stats_client:
        redis_cpu = redis_cpu_seconds(stats_client) - redis_cpu
    if latest is None or latest <= started_wall:
        raise SystemExit("no result stored after the first publish")
    elapsed = (latest - started_wall).total_seconds()
    figures = {
        "e2e_n": n,
        # Only tasks that completed with their result count towards the rate.
        "e2e_rate": (n - failures) / elapsed,
        "e2e_failures": failures,
        "worker_cpu_us": worker_cpu / 1000 / n,
    }
    if redis_cpu is not None:
        figures["redis_cpu_us"] = redis_cpu * 1e6 / n
    if rabbitmq_cpu is not None:
        figures["rabbitmq_cpu_us"] = (thread_cpu_ns(rabbitmq) - rabbitmq_cpu) / 1000 / n
    if before is not None:
        after = command_stats(stats_client)
        delta = {}
        for name, (calls, usec) in after.items():
            calls_before, usec_before = before.get(name, (0, 0))
            calls, usec = calls - calls_before, usec - usec_before
            if name == "mget" and calls:
                # This script's own reads are not the worker's or the producer's.
                theirs = max(0, calls - reads)
                calls, usec = theirs, usec * theirs // calls
            if calls > 0:
                delta[name] = (calls, usec)
        figures["redis_commands"] = {k: [c / n, u / n] for k, (c, u) in sorted(delta.items())}
        figures["redis_commands_per_task"] = sum(c for c, _ in delta.values()) / n
    log(f"end to end: {figures['e2e_rate']:,.0f} tasks/s ({failures} failures)")
    for chunk in range(0, len(ids), 1000):
        results.delete(*[app.backend.get_key_for_task(i) for i in ids[chunk : chunk + 1000]])
    return figures


def forget_unacked(queue):
    """Drops kombu's records of `queue`'s unacknowledged messages, which a worker killed
    during its shutdown leaves behind (another worker would restore them an hour later)."""
    client = redis.Redis.from_url(app.conf.broker_url)
    for tag, record in client.hscan_iter("unacked"):
        try:
            routing_key = json.loads(record)[2]
        except (ValueError, IndexError, TypeError):
            continue
        if routing_key == queue:
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)


def held_eta_memory(n, queue, broker, backend):
    """Memory per task the worker holds for a one-hour countdown (Redis)."""
    log(f"held ETA: starting a prefork worker (concurrency {WORKER_CONCURRENCY}) on {queue}")
    worker = start_worker(queue, broker, backend)
    try:
        wait_until_ready(worker, queue)
        time.sleep(1.0)
        idle = memory_kb(worker.pid, "VmRSS")
        started = time.perf_counter()
        with app.producer_or_acquire() as producer:
            for _ in range(n):
                ping.apply_async(queue=queue, countdown=3600, producer=producer)
        log(f"held ETA: {n:,} sent with countdown=3600 in {time.perf_counter() - started:.1f} s")
        client = redis.Redis.from_url(broker)
        # Taken all it will: the queue is empty, or unchanged for two seconds.
        left, still_since = client.llen(queue), time.monotonic()
        while left > 0 and time.monotonic() - still_since < 2.0:
            time.sleep(0.1)
            now = client.llen(queue)
            if now != left:
                still_since = time.monotonic()
            left = now
        time.sleep(0.5)
        holding = memory_kb(worker.pid, "VmRSS")
        count = n - left
        per_task = (holding - idle) * 1024 / max(count, 1)
        log(
            f"held ETA: worker holds {count:,} ({left} left) after "
            f"{time.perf_counter() - started:.1f} s; RSS {idle / 1024:.1f} MB idle, "
            f"{holding / 1024:.1f} MB holding them: {per_task:,.0f} bytes per task"
        )
    finally:
        stop_worker(worker)
        try:
            delete_queue(queue)
            forget_unacked(queue)
        except Exception as error:  # noqa: BLE001 - cleanup must not hide the result
            log(f"could not delete {queue}: {error}")
    return {"held_n": count, "held_bytes_per_task": per_task, "held_rss_kb": holding}


# How long the chord's keys may take to go after the body's result is stored: the worker
# that sends the body cleans the chord up after publishing it, while the body may already run.
CHORD_CLEANUP_GRACE = 5.0


def one_chord(n, queue, client):
    """Sends a chord of `n` add.s(i, i) and a tsum.s() body to `queue`; returns the seconds
    from building it to the body's `date_done`, and the keys left (besides `.c`, and `.c`)."""
    started_wall = datetime.now().astimezone()
    started = time.perf_counter()
    header = [add.s(i, i).set(queue=queue) for i in range(n)]
    result = chord(header)(tsum.s().set(queue=queue))
    sent = time.perf_counter() - started
    # Polled with a GET: `result.get()` waits on a pub/sub channel this process drains
    # behind the messages of every header task it subscribed to when sending, and saw the
    # body's result minutes after its `date_done` at 10,000 tasks.
    deadline = time.monotonic() + 600
    while not result.ready():
        if time.monotonic() > deadline:
            raise RuntimeError("the chord's body did not finish within 10 minutes")
        time.sleep(0.01)
    observed = time.perf_counter() - started
    value = result.result
    if value != n * (n - 1):
        raise RuntimeError(f"the chord's body returned {value}, not {n * (n - 1)}")
    done = result.date_done
    if isinstance(done, str):
        done = datetime.fromisoformat(done)
    if done is not None and done.tzinfo is None:
        done = done.replace(tzinfo=timezone.utc)
    seconds = (done - started_wall).total_seconds() if done else observed
    if n > 10:
        log(f"chord: {n:,} header tasks sent in {sent:.2f} s; the body's result seen after {observed:.2f} s")
    pattern = app.backend.get_key_for_group(result.parent.id) + b"*"
    deadline = time.monotonic() + CHORD_CLEANUP_GRACE
    while True:
        keys = [key.decode() for key in client.keys(pattern)]
        if all(key.endswith(".c") for key in keys) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    done_markers = sum(1 for key in keys if key.endswith(".c"))
    ids = [r.id for r in result.parent.results] + [result.id]
    # Sending subscribed to every task's result (`RedisBackend.on_task_call`); unsubscribed
    # now, not by results collected at exit with the interpreter half gone (a traceback).
    for task_id in ids:
        app.backend.result_consumer.cancel_for(task_id)
    for chunk in range(0, len(ids), 1000):
        client.delete(*[app.backend.get_key_for_task(i) for i in ids[chunk : chunk + 1000]])
    if keys:
        client.delete(*keys)
    return seconds, len(keys) - done_markers, done_markers


def chord_run(n, queue, concurrency, broker, backend):
    """The chord row on a prefork worker of `concurrency` processes."""
    log(f"chord: starting a prefork worker (concurrency {concurrency}) on {queue}")
    worker = start_worker(queue, broker, backend, concurrency)
    try:
        wait_until_ready(worker, queue)
        client = redis.Redis.from_url(backend)
        one_chord(10, queue, client)
        seconds, keys_left, done_markers = one_chord(n, queue, client)
        # The body's process acknowledges after storing its result: not stopped midway.
        time.sleep(0.5)
    finally:
        stop_worker(worker)
        try:
            delete_queue(queue)
        except Exception as error:  # noqa: BLE001 - cleanup must not hide the result
            log(f"could not delete {queue}: {error}")
    log(
        f"chord: {n:,} header tasks and the body in {seconds:.2f} s ({n / seconds:,.0f} tasks/s); "
        f"keys left: {keys_left} besides {done_markers} done marker(s)"
    )
    return {
        "chord_n": n,
        "chord_seconds": seconds,
        "chord_rate": n / seconds,
        "chord_keys_left": keys_left,
        "chord_done_markers": done_markers,
        "chord_concurrency": concurrency,
    }


def latency(samples, queue):
    warmup = 50
    times = []
    ids = []
    for i in range(warmup + samples):
        start = time.perf_counter()
        result = ping.apply_async(queue=queue)
        value = result.get(timeout=30)
        elapsed = time.perf_counter() - start
        ids.append(result.id)
        if value != "pong":
            raise RuntimeError(f"tasks.ping returned {value!r}")
        if i >= warmup:
            times.append(elapsed * 1000)
    times.sort()
    figures = {
        "latency_n": samples,
        # The same order statistics as the Rust side: nearest rank.
        "p50_ms": nearest_rank(times, 0.5),
        "p99_ms": nearest_rank(times, 0.99),
        "max_ms": times[-1],
    }
    log(
        "latency: p50 {p50_ms:.2f} ms, p99 {p99_ms:.2f} ms, max {max_ms:.2f} ms".format(**figures)
    )
    for chunk in range(0, len(ids), 1000):
        app.backend.client.delete(*[app.backend.get_key_for_task(i) for i in ids[chunk : chunk + 1000]])
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--publish-tasks", type=int, default=10_000)
    parser.add_argument("--latency-samples", type=int, default=1_000)
    parser.add_argument("--held-tasks", type=int, default=0)
    parser.add_argument("--chord-tasks", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=WORKER_CONCURRENCY)
    options = parser.parse_args()

    app.conf.broker_url = options.broker
    app.conf.result_backend = options.backend
    run_id = uuid.uuid4().hex[:8]
    queue, publish_queue = f"bench-py-e2e-{run_id}", f"bench-py-publish-{run_id}"
    # Set before the first publish: Celery reads its queues once.
    app.conf.task_queues = [bench_queue(q, options.broker) for q in (queue, publish_queue)]
    stats_client = (
        redis.Redis.from_url(options.backend) if options.backend.startswith("redis") else None
    )

    figures = {
        "python": sys.version.split()[0],
        "celery": celery.__version__,
        "worker_concurrency": WORKER_CONCURRENCY,
    }
    if options.held_tasks:
        app.conf.task_queues = [bench_queue(f"bench-py-held-{run_id}", options.broker)]
        figures.update(
            held_eta_memory(options.held_tasks, f"bench-py-held-{run_id}", options.broker, options.backend)
        )
        print(json.dumps(figures), flush=True)
        return
    if options.chord_tasks:
        chord_queue = f"bench-py-chord-{run_id}"
        app.conf.task_queues = [bench_queue(chord_queue, options.broker)]
        figures.update(
            chord_run(options.chord_tasks, chord_queue, options.concurrency, options.broker, options.backend)
        )
        print(json.dumps(figures), flush=True)
        return
    one, held = publish_rates(options.publish_tasks, publish_queue)
    figures.update(publish_one=one[0], publish_n=one[1])
    figures.update(publish_batched=held[0], publish_batched_n=held[1])

    log(f"starting a prefork worker (concurrency {WORKER_CONCURRENCY}) on {queue}")
    worker = start_worker(queue, options.broker, options.backend)
    try:
        wait_until_ready(worker, queue)
        time.sleep(0.5)
        figures["idle_rss_kb"] = memory_kb(worker.pid, "VmRSS")
        warm = [ping.apply_async(queue=queue) for _ in range(20)]
        for result in warm:
            result.get(timeout=30)
        app.backend.client.delete(*[app.backend.get_key_for_task(r.id) for r in warm])
        figures.update(end_to_end(options.tasks, queue, stats_client, worker.pid))
        figures["peak_rss_kb"] = memory_kb(worker.pid, "VmHWM")
        figures.update(latency(options.latency_samples, queue))
    finally:
        stop_worker(worker)
        try:
            delete_queue(queue)
        except Exception as error:  # noqa: BLE001 - cleanup must not hide the result
            log(f"could not delete {queue}: {error}")
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
