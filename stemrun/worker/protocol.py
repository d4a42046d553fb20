"""Frames between the worker and its pool children: a 4-byte big-endian length, then JSON.

Only JSON crosses the pipe (never pickle). Parent -> child ops: `init`, `run`, `cancel`, `stop`.
Child -> parent ops: `ready`, `done`, `progress`, `heartbeat`. The end of the parent's stream, or
a write the parent no longer reads, means the worker died: the child exits at once (child.py).
"""

from __future__ import annotations

import json
import struct
from typing import IO, Any

_HEADER = struct.Struct(">I")
#: A frame larger than this means the stream is corrupt (or a result is absurdly large).
MAX_FRAME = 256 * 1024 * 1024


class ProtocolError(Exception):
    """The pipe carried something that is not a frame."""


def pack(message: dict[str, Any]) -> bytes:
    """One frame. Raises TypeError/ValueError when `message` is not JSON-serialisable."""
    body = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
    return _HEADER.pack(len(body)) + body


def write_frame(stream: IO[bytes], message: dict[str, Any]) -> None:
    """Write and flush one frame. Raises OSError (BrokenPipeError) when the reader is gone."""
    stream.write(pack(message))
    stream.flush()


def read_frame(stream: IO[bytes]) -> dict[str, Any] | None:
    """The next frame, or None at end of stream. Raises ProtocolError on a corrupt stream."""
    header = _read_exact(stream, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ProtocolError(f"frame of {size} bytes exceeds the {MAX_FRAME}-byte limit")
    body = _read_exact(stream, size)
    if body is None:
        raise ProtocolError("stream ended inside a frame")
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError("frame is not a JSON object")
    return message


def _read_exact(stream: IO[bytes], size: int) -> bytes | None:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = stream.read(remaining)
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
