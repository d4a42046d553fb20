"""The printed report: machine and versions, the side-by-side table, ratios, SQLite, memory."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    from .run import Row

LIBRARIES = ["stemrun", "redis", "hiredis", "huey", "dramatiq", "taskiq", "taskiq-redis", "saq"]
LIBRARIES += ["celery", "kombu", "rq"]
STEMRUN_ROWS = ["stemrun-process", "stemrun-thread"]
NOT_PEERS = {"streams", *STEMRUN_ROWS}
MEMORY_LABELS = {
    "stemrun-process": "`stemrun worker --pool process -c N`",
    "stemrun-thread": "`stemrun worker --pool thread -c N`",
    "huey": "`huey_consumer -k process -w N` (RedisHuey)",
    "dramatiq": "`dramatiq --processes 1 --threads N`",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Context:
    opts: argparse.Namespace
    started: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


def render(rows: list[Row], context: Context) -> str:
    redis_rows = [row for row in rows if not row.name.endswith("-sqlite")]
    sqlite_rows = [row for row in rows if row.name.endswith("-sqlite")]
    parts = [machine(context)]
    if redis_rows:
        parts += [redis_table(redis_rows), ratios(redis_rows), notes(redis_rows)]
    if sqlite_rows:
        parts.append(sqlite_table(sqlite_rows))
    if any(row.memory for row in rows):
        parts.append(memory_table(rows))
    return "\n\n".join(part for part in parts if part)


def machine(context: Context) -> str:
    opts = context.opts
    server = redis.Redis.from_url(opts.redis).info("server")["redis_version"]
    load = "load average {:.2f} {:.2f} {:.2f}"
    return "\n".join(
        [
            f"Machine: {os.cpu_count()} CPUs, {cpu_model()}, {platform.platform()}",
            f"Python {platform.python_version()}; Redis server {server} at {opts.redis}; "
            f"stemrun from {stemrun_source()}",
            "Versions: " + ", ".join(versions()),
            f"Run: {time.strftime('%Y-%m-%d %H:%M', time.localtime(context.started))}, "
            f"{(time.time() - context.started) / 60:.0f} min; --tasks {opts.tasks}, "
            f"--reps {opts.reps} (medians), --samples {opts.samples}; "
            f"{load.format(*context.load_before)} at the start, "
            f"{load.format(*context.load_after)} at the end",
        ]
    )


def stemrun_source() -> str:
    """The checkout's commit, and whether stemrun/ had uncommitted changes when measured."""
    root = Path(__file__).resolve().parents[2]
    git = ["git", "-C", str(root)]
    try:
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True)
        status = subprocess.run([*git, "status", "--porcelain", "stemrun"], capture_output=True)
    except OSError:
        return "an unknown revision"
    dirty = " with uncommitted changes in stemrun/" if status.stdout.strip() else ""
    return f"commit {commit.stdout.decode().strip()}{dirty}"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def versions() -> list[str]:
    found = []
    for name in LIBRARIES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return found


def rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def millis(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def redis_table(rows: list[Row]) -> str:
    lines = [
        "| system | plain enqueue/s | batch enqueue/s | drain/s | p50 enqueue→finish (ms) "
        "| drain/s per rep (others' CPU share meanwhile) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        label = f"**{row.system.label}**" if row.name in STEMRUN_ROWS else row.system.label
        if row.error and not row.reps:
            lines.append(f"| {label} | failed: {row.error} | | | | |")
            continue
        per_rep = per_rep_drains(row)
        if row.error:
            per_rep += f"; a repetition failed: {row.error}"
        lines.append(
            f"| {label} | {rate(row.median('enqueue'))} | {rate(row.median('batch'))} "
            f"| {rate(row.median('drain'))} | {millis(row.median('p50_ms'))} | {per_rep} |"
        )
    return "\n".join(lines)


def per_rep_drains(row: Row) -> str:
    """Each repetition's drain with the CPU share others used meanwhile, to show a busy machine."""
    return ", ".join(f"{rate(rep.drain)} ({rep.others_cpu:.0%})" for rep in row.reps)


def best(rows: list[Row], metric: str, lowest: bool = False) -> tuple[float, str] | None:
    found = [(value, row.name) for row in rows if (value := row.median(metric)) is not None]
    if not found:
        return None
    return min(found) if lowest else max(found)


def ratio(value: float | None, base: tuple[float, str] | None) -> str:
    if value is None or base is None:
        return "—"
    return f"{value / base[0]:.2f} (vs {base[1]})"


def ratios(rows: list[Row]) -> str:
    peers = [row for row in rows if row.name not in NOT_PEERS and row.reps]
    ceiling = next((row for row in rows if row.name == "streams" and row.reps), None)
    xadd = best([ceiling], "batch") if ceiling else None
    stems = [row for row in rows if row.name in STEMRUN_ROWS and row.reps]
    if not stems:
        return ""
    lines = [
        "stemrun ÷ the fastest peer (rates: > 1 is faster; p50: < 1 is faster):",
        "",
        "| stemrun | drain | plain enqueue | p50 enqueue→finish | enqueue_many ÷ pipelined XADD |",
        "| --- | --- | --- | --- | --- |",
        "| target (issue 17) | ≥ 2 | ≥ 1 | ≤ 1 | ≥ 0.75 |",
    ]
    for row in stems:
        cells = [
            ratio(row.median("drain"), best(peers, "drain")),
            ratio(row.median("enqueue"), best(peers, "enqueue")),
            ratio(row.median("p50_ms"), best(peers, "p50_ms", lowest=True)),
            ratio(row.median("batch"), xadd),
        ]
        lines.append(f"| {row.system.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(rows: list[Row]) -> str:
    lines = [
        "How each system ran (2 worker processes each, the same no-op returning time.time()). "
        "Every system stores the return value in Redis, since that is where the finish times are "
        "read from; for Celery, Dramatiq and Taskiq that result backend is opt-in. In "
        "parentheses after each repetition's drain: the share of the machine's CPU that processes "
        "other than the benchmark, its workers and Redis used during that repetition:"
    ]
    lines += [f"- {row.system.label}: {row.system.note}" for row in rows if row.system.note]
    return "\n".join(lines)


def sqlite_table(rows: list[Row]) -> str:
    lines = [
        "Embedded SQLite store (2 worker processes each):",
        "",
        "| system | plain enqueue/s | batch enqueue/s | drain/s | drain/s per rep (others' CPU) |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        per_rep = per_rep_drains(row) or f"failed: {row.error}"
        lines.append(
            f"| {row.system.label} | {rate(row.median('enqueue'))} | {rate(row.median('batch'))} "
            f"| {rate(row.median('drain'))} | {per_rep} |"
        )
    named = {row.name: row for row in rows}
    if "stemrun-sqlite" in named and "huey-sqlite" in named:
        huey = best([named["huey-sqlite"]], "drain")
        drain = ratio(named["stemrun-sqlite"].median("drain"), huey)
        lines += ["", f"stemrun ÷ SqliteHuey drain: {drain} (target ≥ 2)"]
    return "\n".join(lines)


def memory_table(rows: list[Row]) -> str:
    lines = [
        "Memory of one worker process with its children after draining "
        "(MiB; RSS summed over the processes from /proc/<pid>/status VmRSS, "
        "PSS from smaps_rollup shares pages between them):",
        "",
        "| one worker process | N=2 RSS | N=2 PSS | N=8 RSS | N=8 PSS |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        if not row.memory:
            continue
        cells = []
        for concurrency in (2, 8):
            memory = row.memory.get(concurrency)
            if memory is None:
                cells += ["—", "—"]
                continue
            procs = f" ({memory.processes} procs)"
            cells += [f"{memory.rss_kib / 1024:.0f}{procs}", f"{memory.pss_kib / 1024:.0f}"]
        label = MEMORY_LABELS.get(row.name, row.system.label)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
