"""stemrun on Redis against Celery (prefork), Dramatiq and RQ on the same Redis; prints a table.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/redis_compare.py [--redis redis://127.0.0.1:6379] [--tasks 4000]

Every framework runs no-op tasks that return `time.time()` with results stored, on 2 worker
processes of 2 slots each (Celery prefork -c 2, Dramatiq --processes 2 --threads 2, stemrun
process pool -c 2; RQ forks a child per job, its normal mode, with 2 `rq worker` processes):

- enqueue: one call per task; enqueue_many: the bulk API (stemrun, RQ) in batches of 1,000;
- drain: tasks enqueued with no worker running, then the workers start; rate over the span
  between the first and the last finish (the task's returned time), so start-up is not counted;
- latency: one worker process, one task at a time, from just before the enqueue call to the
  finish time the task returned; p50 of `--samples`.

stemrun uses db 0 under a fresh namespace; the others use `--other-db` (default 9) under fresh
queue names. Only the keys a run created are deleted afterwards (never FLUSHDB).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import redis

BIN = Path(sys.executable).parent
TAG = uuid.uuid4().hex[:8]

STEM_YAML = f"""
version: 1
broker: {{url}}
namespace: cmp{TAG}
queues: {{{{default: {{{{}}}}}}}}
tasks:
  noop: {{{{handler: "cmptasks:noop", max_retries: 0}}}}
workers:
  default: {{{{queues: [default], concurrency: 2, pool: process}}}}
"""
STEM_TASKS = "import time\n\ndef noop() -> float:\n    return time.time()\n"
CELERY_APP = f"""
import time
from celery import Celery
app = Celery("cmpcelery", broker="{{url}}", backend="{{url}}")
app.conf.update(task_default_queue="cq{TAG}", task_default_exchange="cq{TAG}",
                worker_prefetch_multiplier=2, broker_connection_retry_on_startup=True,
                worker_hijack_root_logger=False, result_expires=3600)

@app.task
def noop():
    return time.time()
"""
DRAMATIQ_APP = f"""
import time
import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend
backend = RedisBackend(url="{{url}}", namespace="dr{TAG}-results")
broker = RedisBroker(url="{{url}}", namespace="dr{TAG}")
broker.add_middleware(Results(backend=backend))
dramatiq.set_broker(broker)

@dramatiq.actor(store_results=True, max_retries=0, queue_name="q{TAG}")
def noop():
    return time.time()
"""


@dataclass
class Result:
    name: str
    enqueue: float = 0.0
    enqueue_many: float | None = None
    drain: float = 0.0
    p50_ms: float = 0.0
    notes: list[str] = field(default_factory=list)


def spawn(args: list[str], root: Path, count: int) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return [
        subprocess.Popen(
            args, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(count)
    ]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def timed(fn: Callable[[], Any], count: int) -> float:
    started = time.perf_counter()
    fn()
    return count / (time.perf_counter() - started)


def span_rate(finishes: list[float]) -> float:
    return (len(finishes) - 1) / (max(finishes) - min(finishes))


def latency(enqueue_and_wait: Callable[[], float], samples: int) -> float:
    values = []
    for _ in range(samples):
        before = time.time()
        values.append(enqueue_and_wait() - before)
        time.sleep(0.01)
    return statistics.median(values) * 1000


def run_stemrun(url: str, root: Path, tasks: int, samples: int) -> Result:
    from stemrun.client import Stem
    from stemrun.config import load_config

    (root / "cmptasks.py").write_text(STEM_TASKS)
    (root / "stem.yaml").write_text(STEM_YAML.format(url=f"{url}/0"))
    result = Result("stemrun")
    worker = [str(BIN / "stemrun"), "worker", "--log-level", "warning"]
    with Stem(load_config(root / "stem.yaml")) as stem:
        try:
            result.enqueue = timed(lambda: [stem.enqueue("noop") for _ in range(tasks)], tasks)
            batches = [[("noop", {})] * 1000 for _ in range(tasks // 1000)]
            result.enqueue_many = timed(lambda: [stem.enqueue_many(b) for b in batches], tasks)
            ids = stem.enqueue_many([("noop", {})] * tasks)
            procs = spawn(worker, root, 2)
            finishes = [stem.wait(i, timeout=600).result for i in ids]
            stop(procs)
            result.drain = span_rate(finishes)
            procs = spawn(worker, root, 1)
            stem.wait(stem.enqueue("noop"), timeout=60)
            result.p50_ms = latency(lambda: stem.wait(stem.enqueue("noop"), 30).result, samples)
            stop(procs)
        finally:
            drop_keys(f"{url}/0", f"cmp{TAG}:*")
    return result


def run_celery(url: str, root: Path, tasks: int, samples: int) -> Result:
    (root / "cmpcelery.py").write_text(CELERY_APP.format(url=url))
    sys.path.insert(0, str(root))
    from cmpcelery import app, noop  # type: ignore[import-not-found]

    result = Result("celery (prefork)", notes=["no bulk enqueue API"])
    worker = [str(BIN / "celery"), "-A", "cmpcelery", "worker", "-P", "prefork", "-c", "2"]
    worker += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "warning"]
    try:
        result.enqueue = timed(lambda: [noop.delay() for _ in range(tasks)], tasks)
        pending = [noop.delay() for _ in range(tasks)]
        procs = [spawn([*worker, "-n", f"w{i}{TAG}@%h"], root, 1)[0] for i in range(2)]
        finishes = [r.get(timeout=600) for r in pending]
        stop(procs)
        result.drain = span_rate(finishes)
        procs = spawn([*worker, "-n", f"lat{TAG}@%h"], root, 1)
        noop.delay().get(timeout=60)
        result.p50_ms = latency(lambda: noop.delay().get(timeout=30, interval=0.001), samples)
        stop(procs)
    finally:
        app.close()
        drop_keys(url, f"*cq{TAG}*", "celery-task-meta-*", "_kombu.binding_deadlines")
    return result


def run_dramatiq(url: str, root: Path, tasks: int, samples: int) -> Result:
    (root / "cmpdramatiq.py").write_text(DRAMATIQ_APP.format(url=url))
    sys.path.insert(0, str(root))
    from cmpdramatiq import backend, noop  # type: ignore[import-not-found]

    result = Result("dramatiq", notes=["no bulk enqueue API"])
    worker = [str(BIN / "dramatiq"), "cmpdramatiq", "--threads", "2"]
    get = lambda message: message.get_result(backend=backend, block=True, timeout=600_000)  # noqa: E731
    sent: list[Any] = []
    send = lambda: sent.append(noop.send()) or sent[-1]  # noqa: E731
    try:
        result.enqueue = timed(lambda: [send() for _ in range(tasks)], tasks)
        messages = [send() for _ in range(tasks)]
        procs = spawn([*worker, "--processes", "2"], root, 1)
        finishes = [get(m) for m in messages]
        stop(procs)
        result.drain = span_rate(finishes)
        procs = spawn([*worker, "--processes", "1"], root, 1)
        get(send())
        result.p50_ms = latency(lambda: get(send()), samples)
        stop(procs)
    finally:
        drop_keys(url, f"dr{TAG}*", *(backend.build_message_key(m) for m in sent))
    return result


def run_rq(url: str, root: Path, tasks: int, samples: int) -> Result:
    from rq import Queue

    (root / "cmprq.py").write_text(STEM_TASKS)
    sys.path.insert(0, str(root))
    from cmprq import noop  # type: ignore[import-not-found]

    client = redis.Redis.from_url(url)
    queue = Queue(f"rq{TAG}", connection=client)
    result = Result("rq", notes=["forks a child per job (its default)"])
    worker = [str(BIN / "rq"), "worker", "-u", url, f"rq{TAG}", "-q"]

    def finished(job: Any) -> float:
        while (value := job.latest_result()) is None:
            time.sleep(0.001)
        return float(value.return_value)

    try:
        result.enqueue = timed(lambda: [queue.enqueue(noop) for _ in range(tasks)], tasks)
        batch = [Queue.prepare_data(noop) for _ in range(1000)]
        result.enqueue_many = timed(
            lambda: [queue.enqueue_many(batch) for _ in range(tasks // 1000)], tasks
        )
        queue.empty()
        jobs = [queue.enqueue(noop) for _ in range(tasks)]
        procs = spawn(worker, root, 2)
        finishes = [finished(job) for job in jobs]
        stop(procs)
        result.drain = span_rate(finishes)
        procs = spawn(worker, root, 1)
        result.p50_ms = latency(lambda: finished(queue.enqueue(noop)), samples)
        stop(procs)
    finally:
        queue.empty()
        drop_keys(url, f"rq:*rq{TAG}*", "rq:job:*", "rq:results:*", "rq:worker*", "rq:queues")
        drop_keys(url, "rq:clean_groups")
        client.close()
    return result


def drop_keys(url: str, *patterns: str) -> None:
    """Delete the keys a run created (patterns of this run's names, in its db)."""
    client = redis.Redis.from_url(url)
    for pattern in patterns:
        keys = list(client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--other-db", type=int, default=9)
    parser.add_argument("--tasks", type=int, default=4000)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--only", default="stemrun,celery,dramatiq,rq")
    opts = parser.parse_args()
    runners = {"stemrun": run_stemrun, "celery": run_celery, "dramatiq": run_dramatiq, "rq": run_rq}
    results = []
    for name in opts.only.split(","):
        url = opts.redis if name == "stemrun" else f"{opts.redis}/{opts.other_db}"
        with tempfile.TemporaryDirectory(prefix=f"cmp-{name}-") as tmp:
            results.append(runners[name](url, Path(tmp), opts.tasks, opts.samples))
    print_table(results, opts)


def print_table(results: list[Result], opts: argparse.Namespace) -> None:
    server = redis.Redis.from_url(opts.redis).info("server")["redis_version"]
    versions = ", ".join(
        f"{pkg} {metadata.version(pkg)}" for pkg in ("stemrun", "celery", "dramatiq", "rq", "redis")
    )
    print(
        f"Python {platform.python_version()} | {platform.machine()} {os.cpu_count()} cpus | "
        f"Redis server {server} | {versions} | {opts.tasks} tasks"
    )
    base = results[0]
    print(
        f"{'framework':18} {'enqueue/s':>10} {'many/s':>10} {'drain/s':>10} {'p50 ms':>8}"
        f"   stemrun x (enqueue, drain, latency)"
    )
    for r in results:
        many = f"{r.enqueue_many:,.0f}" if r.enqueue_many else "n/a"
        ratios = ", ".join(
            f"{x:.2f}"
            for x in (base.enqueue / r.enqueue, base.drain / r.drain, r.p50_ms / base.p50_ms)
        )
        print(
            f"{r.name:18} {r.enqueue:>10,.0f} {many:>10} {r.drain:>10,.0f} {r.p50_ms:>8.1f}"
            f"   {ratios if r is not base else '':24} {'; '.join(r.notes)}"
        )


if __name__ == "__main__":
    main()
