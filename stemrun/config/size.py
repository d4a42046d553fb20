"""Sizes as users write them (`512KiB`, `1MiB`, `2MB`, `1048576`) -> bytes.

A size is a whole number of bytes, or a whole number with a unit: `B`; `KiB`, `MiB`, `GiB`
(powers of 1024); `KB`, `MB`, `GB` (powers of 1000, as the SI prefixes mean). Units are
case-sensitive and written without a space: `1mb` or `1 MiB` is refused rather than guessed at.
"""

from __future__ import annotations

import re

UNIT_BYTES = {
    "B": 1,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
}
#: The `size` pattern of stem.schema.json, which a test keeps identical.
SIZE_PATTERN = "^[1-9][0-9]*(B|KB|MB|GB|KiB|MiB|GiB)$"
_SIZE = re.compile(SIZE_PATTERN)
_BYTES = re.compile("^[1-9][0-9]*$")
_HINT = "a size like '512KiB', '1MiB', '2MB' or a whole number of bytes"
# Largest unit first, binary before decimal: 1048576 shows as `1 MiB`, 1000000 as `1 MB`.
_EXACT = sorted(
    ((unit, factor) for unit, factor in UNIT_BYTES.items() if factor > 1),
    key=lambda item: (-item[1], "i" not in item[0]),
)
_BINARY = [(unit, factor) for unit, factor in _EXACT if "i" in unit]


def parse_size(value: str | int) -> int:
    """Bytes in `value`: a whole number of bytes, or a string like `512KiB`, `1MiB`, `2MB`.

    Raises ValueError when the value is not a size of at least one byte.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {_HINT}, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"a size must be at least 1 byte, got {value!r}")
        return value
    if isinstance(value, str):
        text = value.strip()
        if _BYTES.match(text):
            return int(text)
        match = _SIZE.match(text)
        if match is not None:
            return int(text[: match.start(1)]) * UNIT_BYTES[match.group(1)]
    raise ValueError(f"expected {_HINT}, got {value!r}")


def format_size(size: int) -> str:
    """`size` bytes for people: exact in the largest unit that divides it (`1 MiB`, `2 MB`),
    else in binary units to one decimal (`2.3 MiB`)."""
    for unit, factor in _EXACT:
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    for unit, factor in _BINARY:
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"
