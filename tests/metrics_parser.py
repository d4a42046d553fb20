"""A strict parser of the Prometheus text exposition format (0.0.4), for tests.

It rejects what a Prometheus server would reject (bad names, bad label syntax, unparsable values,
samples before their TYPE, a family split in two, duplicate series) and checks histograms:
cumulative buckets, a `+Inf` bucket equal to `_count`, and a `_sum`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(\{{(.*)\}})?\s+(\S+)(\s+-?\d+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\\n]|\\[\\"n])*)"\s*(,|$)')
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count", "")}

Labels = tuple[tuple[str, str], ...]


class ExpositionError(ValueError):
    """The text is not valid Prometheus exposition."""


@dataclass
class Family:
    """One metric family: its type, help and samples (sample name, labels, value)."""

    name: str
    type: str = "untyped"
    help: str = ""
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def value(self, **labels: str) -> float:
        """The one sample (of the family's own name) with exactly these labels."""
        found = [v for n, lab, v in self.samples if n == self.name and lab == labels]
        if len(found) != 1:
            raise KeyError(f"{self.name}{labels}: {len(found)} samples")
        return found[0]

    def total(self, sample: str | None = None) -> float:
        """Sum of every sample named `sample` (default: the family name)."""
        wanted = sample or self.name
        return sum(v for n, _, v in self.samples if n == wanted)


def _labels(text: str, line: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    pos = 0
    while pos < len(text.rstrip()):
        match = _LABEL.match(text, pos)
        if match is None:
            raise ExpositionError(f"bad labels in {line!r}")
        name, raw = match.group(1), match.group(2)
        if name in labels:
            raise ExpositionError(f"label {name} twice in {line!r}")
        labels[name] = raw.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        pos = match.end()
    return labels


def _value(text: str, line: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ExpositionError(f"bad value in {line!r}") from None


def _family_of(sample: str, families: dict[str, Family]) -> Family | None:
    if sample in families:
        return families[sample]
    for name, family in families.items():
        if sample in (name + suffix for suffix in _SUFFIXES.get(family.type, ())):
            return family
    return None


def parse(text: str) -> dict[str, Family]:
    """Families by name. Raises ExpositionError."""
    if text and not text.endswith("\n"):
        raise ExpositionError("the exposition must end with a newline")
    families: dict[str, Family] = {}
    order: list[str] = []
    seen: set[tuple[str, Labels]] = set()
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("#"):
            _comment(line, families, order)
            continue
        match = _SAMPLE.match(line)
        if match is None:
            raise ExpositionError(f"bad sample line {line!r}")
        name = match.group(1)
        family = _family_of(name, families)
        if family is None or order[-1] != family.name:
            raise ExpositionError(f"sample {name} outside its family (no TYPE, or split)")
        labels = _labels(match.group(3) or "", line)
        key = (name, tuple(sorted(labels.items())))
        if key in seen:
            raise ExpositionError(f"duplicate series {line!r}")
        seen.add(key)
        family.samples.append((name, labels, _value(match.group(4), line)))
    for family in families.values():
        if family.type == "histogram":
            _check_histogram(family)
    return families


def _comment(line: str, families: dict[str, Family], order: list[str]) -> None:
    parts = line.split(None, 3)
    if len(parts) < 3 or parts[1] not in ("HELP", "TYPE"):
        return  # a plain comment
    name = parts[2]
    if not re.fullmatch(_NAME, name):
        raise ExpositionError(f"bad metric name in {line!r}")
    family = families.get(name)
    if family is None:
        family = families[name] = Family(name)
        order.append(name)
    elif order[-1] != name:
        raise ExpositionError(f"family {name} split in two")
    rest = parts[3] if len(parts) > 3 else ""
    if parts[1] == "TYPE":
        if rest not in _TYPES or family.samples:
            raise ExpositionError(f"bad or late TYPE line {line!r}")
        family.type = rest
    else:
        family.help = rest


def _check_histogram(family: Family) -> None:
    series: dict[Labels, list[tuple[float, float]]] = {}
    counts: dict[Labels, float] = {}
    sums: set[Labels] = set()
    for name, labels, value in family.samples:
        if name.endswith("_bucket"):
            le = labels.pop("le", None)
            if le is None:
                raise ExpositionError(f"{name} without le")
            series.setdefault(tuple(sorted(labels.items())), []).append((float(le), value))
            labels["le"] = le
        elif name.endswith("_count"):
            counts[tuple(sorted(labels.items()))] = value
        elif name.endswith("_sum"):
            sums.add(tuple(sorted(labels.items())))
    for key, buckets in series.items():
        bounds = [b for b, _ in buckets]
        values = [v for _, v in buckets]
        if bounds != sorted(bounds) or not math.isinf(bounds[-1]):
            raise ExpositionError(f"{family.name}{dict(key)}: buckets unsorted or no +Inf")
        if values != sorted(values):
            raise ExpositionError(f"{family.name}{dict(key)}: buckets not cumulative")
        if counts.get(key) != values[-1] or key not in sums:
            raise ExpositionError(f"{family.name}{dict(key)}: _count/_sum missing or wrong")
