"""stemrun beside Huey, Dramatiq, Taskiq, SAQ, Celery, RQ and a bare Streams loop on one Redis.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python benchmarks/redis_compare.py [--tasks 20000] [--reps 2] [--only NAME,...]

One run measures every system on the same Redis with the same no-op task (it returns
`time.time()`; each system stores that return value the way it normally stores results), with 2
worker processes each, configured as the system's own docs recommend for throughput (each row's
configuration is printed below the table). Per repetition and system:

- plain enqueue/s: `--tasks` calls of the one-task API;
- batch enqueue/s: the bulk API (stemrun and RQ `enqueue_many`; pipelined XADD for the bare
  loop) in batches of 1,000; "—" where a system has none (a loop of single calls is not one);
- drain/s: the 2 workers start after those enqueues and drain the backlog they left; the rate is
  taken between the first and the last task's own finish time, so start-up is not counted;
- p50 enqueue→finish: then, on the idle workers, `--samples` tasks one at a time, from just before
  the enqueue call to the finish time the task returned.

Repetitions are interleaved across systems; the table shows medians and every drain. Ratios put
stemrun beside the fastest peer (the bare loop is the ceiling, not a peer), and its
`enqueue_many` beside pipelined XADD. A second table compares the embedded SQLite store with
Huey's SqliteHuey (drain only), and a third the memory of one worker process with its children
at concurrency 2 and 8 after draining `--memory-tasks`.

stemrun uses db 0 under fresh namespaces; every other system uses `--other-db` (default 9) under
names carrying this run's tag. Only keys the run created are deleted (never FLUSHDB/FLUSHALL).
Progress goes to stderr, the markdown report to stdout. `--only` names: streams, huey, dramatiq,
taskiq, saq, celery, rq, stemrun-process, stemrun-thread, huey-sqlite, stemrun-sqlite.
"""

from __future__ import annotations

from compare.run import main

if __name__ == "__main__":
    main()
