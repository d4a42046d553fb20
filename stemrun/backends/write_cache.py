"""The Redis result backend's memory of its own writes, which spares a read before each one.

Fenced writes on Redis are compare-and-set on a record's version: they read the record and its
version, then write if the version has not moved. A worker writes the same record twice in a row
(`running`, then the outcome), so remembering what it just wrote, at the version the write gave,
saves the second read.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence

from stemrun.backends.record import StatusRecord
from stemrun.state import TERMINAL

#: Records by task id, each with its version (the text Redis keeps); None: no live record.
Current = dict[str, tuple[StatusRecord | None, str]]


class RecentWrites:
    """Records this backend object just wrote, with the version the write gave them.

    A worker writes `running` and, moments later, the outcome of the same record: reusing its own
    write saves the read before the compare-and-set. A stale entry only costs a retry (the
    version check misses and the next round reads from Redis); entries are kept briefly, and only
    for records that are not terminal, so a record that expired and was created again under the
    same id is never mistaken for the one remembered.
    """

    KEEP_S = 60.0
    LIMIT = 4096

    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[StatusRecord, str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, written: Mapping[str, tuple[StatusRecord | None, str]]) -> None:
        """Keep records just written, at the versions their writes gave them."""
        with self._lock:
            self._remember(written, time.monotonic())

    def _remember(
        self, written: Mapping[str, tuple[StatusRecord | None, str]], stamp: float
    ) -> None:
        for task_id, (record, version) in written.items():
            if record is None or record.state in TERMINAL:
                self._entries.pop(task_id, None)
                continue
            self._entries[task_id] = (record, version, stamp)
            self._entries.move_to_end(task_id)
        while len(self._entries) > self.LIMIT:
            self._entries.popitem(last=False)

    def forget(self, task_ids: Iterable[str]) -> None:
        """Drop what is kept of these records (a write to them missed)."""
        with self._lock:
            for task_id in task_ids:
                self._entries.pop(task_id, None)

    def recall(self, task_ids: Sequence[str], now: float) -> Current:
        """The kept records among `task_ids` still fresh and live at `now`, taken out of the
        cache (the caller remembers what it writes next)."""
        found: Current = {}
        fresh_after = time.monotonic() - self.KEEP_S
        with self._lock:
            entries = [(task_id, self._entries.pop(task_id, None)) for task_id in task_ids]
        for task_id, entry in entries:
            if entry is None:
                continue
            record, version, stamp = entry
            expired = record.expires_at is not None and record.expires_at < now
            if stamp >= fresh_after and not expired:
                found[task_id] = (record, version)
        return found
