"""Beat dispatch drift: how late each fire is enqueued compared with its scheduled time.

    .venv/bin/python benchmarks/beat_drift.py [--entries 50] [--seconds 20] [--burst 1000]
                                              [--store sqlite|redis]

Two runs, both with the real clock and the real `Beat.run()` loop (default tick 1s) on a
thread, embedded SQLite broker and result backend (the schedule store is SQLite too, or Redis):

- steady: `--entries` entries `every:1s` for `--seconds` seconds (50 x 20 = 1,000 fires). Each
  entry's first fire is left out: it happens when the entry is applied and its scheduled time
  is that moment floored to the whole second (by design), so it measures flooring, not beat;
- burst: `--burst` entries all due at the same instant (`at:` one shots a moment ahead), so one
  tick has to dispatch all of them: the drift of the last one is the batch's dispatch time.

Drift of one fire = its status record's `created_at` (stamped by `Stem.enqueue`, just before
the publish) minus the scheduled time in its id `sched:{name}:{time}`. Nobody consumes the
queue, so workers do not compete for the CPU. Prints p50 / p99 / max per run.
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from stemrun.beat import Beat
from stemrun.config import config_from_mapping
from stemrun.config.model import Config


def make_config(root: Path, schedules: dict[str, dict[str, str]], store: str) -> Config:
    data: dict[str, object] = {
        "broker": "sqlite:///bench.db",
        "namespace": "drift",
        "tasks": {"noop": {"handler": "benchtasks:noop"}},
        "schedules": schedules,
    }
    if store == "redis":
        data["schedule_store"] = "redis://127.0.0.1:6379/0"
    return config_from_mapping(data, root_dir=root, env={})


def run_beat(config: Config, until: float) -> None:
    beat = Beat(config, install_signal_handlers=False, name="bench")
    thread = threading.Thread(target=beat.run)
    thread.start()
    time.sleep(max(0.0, until - time.time()))
    beat.stop()
    thread.join()


def drifts(root: Path, *, skip_first: bool = False) -> list[float]:
    """Sorted drifts; `skip_first` drops each entry's first fire (see the module docstring)."""
    conn = sqlite3.connect(root / "bench.db")
    try:
        rows = conn.execute("SELECT id, data FROM drift_status WHERE id LIKE 'sched:%'")
        fires: dict[str, list[tuple[float, float]]] = {}
        for task_id, data in rows:
            _, name, stamp = task_id.split(":", 2)
            scheduled = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
            fires.setdefault(name, []).append((scheduled, json.loads(data)["created_at"]))
    finally:
        conn.close()
    out = []
    for entry_fires in fires.values():
        entry_fires.sort()
        kept = entry_fires[1:] if skip_first else entry_fires
        out.extend(created - scheduled for scheduled, created in kept)
    return sorted(out)


def clear_redis() -> None:
    import redis

    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    keys = list(client.scan_iter(match="drift:*"))
    if keys:
        client.delete(*keys)
    client.close()


def steady(entries: int, seconds: float, store: str) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        schedules = {f"e{i}": {"task": "noop", "spec": "every:1s"} for i in range(entries)}
        run_beat(make_config(root, schedules, store), time.time() + seconds + 1)
        return drifts(root, skip_first=True)


def burst(count: int, store: str) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5 + count / 200)
        spec = f"at:{due.isoformat()}"
        schedules = {f"e{i}": {"task": "noop", "spec": spec} for i in range(count)}
        run_beat(make_config(root, schedules, store), due.timestamp() + 2 + count / 200)
        return drifts(root)


def report(name: str, values: list[float]) -> None:
    if not values:
        print(f"{name:8} no fires")
        return
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    print(
        f"{name:8} fires={len(values):5}  p50={cuts[49] * 1000:8.1f} ms  "
        f"p99={cuts[98] * 1000:8.1f} ms  max={values[-1] * 1000:8.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}, store={args.store}")
    if args.store == "redis":
        clear_redis()
    report("steady", steady(args.entries, args.seconds, args.store))
    if args.store == "redis":
        clear_redis()
    report("burst", burst(args.burst, args.store))
    if args.store == "redis":
        clear_redis()


if __name__ == "__main__":
    main()
