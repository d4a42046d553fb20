"""What signing costs: sign/verify time per task, and drain throughput with signing on and off.

    .venv/bin/python benchmarks/signing.py [--rounds N] [--tasks N] [--workers 2] [-c 2]
                                           [--broker URL] [--no-drain]

Measures, for unsigned, HMAC-SHA256 and Ed25519 envelopes of a typical task (a dozen small args
and two headers):
- sign: the signer alone on the core bytes, and `encode` with it (what a producer pays per task);
- verify: the verifier alone, and `decode` with it (what a worker pays per delivery);
- drain rate of `--workers` `stemrun worker` processes on the same store, using the drain method
  of benchmarks/throughput.py, once per algorithm.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from stemrun.client import Stem
from stemrun.config import load_config
from stemrun.config.model import SigningConfig
from stemrun.envelope import Envelope, decode, encode
from stemrun.signing import (
    generate_ed25519_pair,
    generate_hmac_secret,
    signer_for,
    verifier_for,
)

ENVELOPE = Envelope(
    id="5f2b8c1e9a7d4e3f8b6a0c2d1e4f7a9b",
    task="email.send",
    queue="notifications",
    args={f"field_{i}": f"value number {i}" for i in range(12)},
    headers={"tenant": "billing", "trace": "00-4bf92f3577b34da6a3ce929d0e0e4736-01"},
    priority=3,
    created_at=1_790_000_000.0,
)


MICRO_COLUMNS = ("sign", "verify", "encode", "decode")


def configs() -> dict[str, SigningConfig | None]:
    public, private = generate_ed25519_pair()
    return {
        "off": None,
        "hmac-sha256": SigningConfig(keys={"k": generate_hmac_secret()}, active_key="k"),
        "ed25519": SigningConfig(
            algorithm="ed25519", public_keys={"k": public}, private_keys={"k": private}
        ),
    }


def per_call_us(fn: Callable[[], object], rounds: int) -> float:
    """Best of three timed loops, in microseconds per call (the least disturbed by neighbours)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(rounds):
            fn()
        best = min(best, time.perf_counter() - started)
    return best / rounds * 1e6


def micro(signing: SigningConfig | None, rounds: int) -> dict[str, float]:
    signer, verifier = signer_for(signing), verifier_for(signing)
    raw = encode(ENVELOPE, signer)
    core = json.dumps(ENVELOPE.core(), sort_keys=True, separators=(",", ":")).encode()
    row = {
        "encode": per_call_us(lambda: encode(ENVELOPE, signer), rounds),
        "decode": per_call_us(lambda: decode(raw, verifier), rounds),
    }
    if signer is not None and verifier is not None:
        kid, sig = signer(core)
        row["sign"] = per_call_us(lambda: signer(core), rounds)
        row["verify"] = per_call_us(lambda: verifier(core, kid, sig), rounds)
    return row


def drain_rate(
    throughput: ModuleType, signing_yaml: str, opts: argparse.Namespace, label: str
) -> float:
    with tempfile.TemporaryDirectory(prefix="stemrun-bench-sign-") as tmp:
        root = Path(tmp)
        (root / "benchtasks.py").write_text("def noop() -> None:\n    return None\n")
        yaml = throughput.STEM_YAML.format(
            broker=opts.broker,
            stamp=f"{os.getpid()}{label}",
            concurrency=opts.concurrency,
            pool="process",
        )
        (root / "stem.yaml").write_text(yaml + signing_yaml)
        with Stem(load_config(root / "stem.yaml", env={})) as stem:
            seconds = throughput.bench_drain(stem, root, opts.tasks, opts.workers)
    return float(opts.tasks / seconds)


def signing_section(signing: SigningConfig | None) -> str:
    if signing is None:
        return ""
    lines = [f"signing:\n  algorithm: {signing.algorithm}\n  active_key: k\n"]
    for name in ("keys", "public_keys", "private_keys"):
        for kid, value in getattr(signing, name).items():
            lines.append(f"  {name}: {{{kid}: {value!r}}}\n")
    return "".join(lines)


def load_throughput() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "throughput", Path(__file__).with_name("throughput.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20_000)
    parser.add_argument("--tasks", type=int, default=5_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("-c", "--concurrency", type=int, default=2)
    parser.add_argument("--broker", default="sqlite:///.stem/bench.db")
    parser.add_argument("--no-drain", action="store_true")
    opts = parser.parse_args()

    print(
        f"Python {platform.python_version()} | {platform.machine()} {os.cpu_count()} cpus | "
        f"envelope {len(encode(ENVELOPE))} bytes unsigned"
    )
    print(f"{'algorithm':12} {'sign':>9} {'verify':>9} {'encode':>9} {'decode':>9} {'drain':>10}")
    throughput = load_throughput()
    for name, signing in configs().items():
        row = micro(signing, opts.rounds)
        cells = [f"{row[k]:7.1f}µs" if k in row else f"{'—':>9}" for k in MICRO_COLUMNS]
        drain = ""
        if not opts.no_drain:
            rate = drain_rate(throughput, signing_section(signing), opts, name.replace("-", ""))
            drain = f"{rate:,.0f}/s"
        print(f"{name:12} {' '.join(cells)} {drain:>10}")
    print(
        f"(µs per task, best of 3 x {opts.rounds:,}; drain: {opts.tasks:,} no-op tasks, "
        f"{opts.workers} workers x {opts.concurrency} process slots, {opts.broker})"
    )


if __name__ == "__main__":
    main()
