"""`keys generate`: fresh signing key material as `STEM_SIGNING_*=value` lines."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import typer

from stemrun.cli.common import EXIT_USAGE, JsonOpt, exits, fail, print_json
from stemrun.signing import generate_ed25519_pair, generate_hmac_secret, key_id_problem


class Algorithm(StrEnum):
    """`--algorithm` values (the `signing.algorithm` of stem.yaml)."""

    HMAC_SHA256 = "hmac-sha256"
    ED25519 = "ed25519"


keys_app = typer.Typer(help="Signing keys.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.add_typer(keys_app, name="keys")
    keys_app.command("generate")(generate)


@exits
def generate(
    algorithm: Annotated[
        Algorithm, typer.Option("--algorithm", help="hmac-sha256 (shared secret) or ed25519.")
    ] = Algorithm.HMAC_SHA256,
    key_id: Annotated[
        str | None, typer.Option("--key-id", help="Id of the new key (default: k + today's date).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Print a new signing key as STEM_SIGNING_* lines to paste into the environment."""
    kid = key_id or "k" + datetime.now(UTC).strftime("%Y%m%d")
    problem = key_id_problem(kid)
    if problem is not None:
        fail(f"--key-id: {problem}", EXIT_USAGE)
    lines = variables(algorithm, kid)
    if json_out:
        print_json({"algorithm": algorithm.value, "key_id": kid, "env": lines})
        return
    for name, value in lines.items():
        typer.echo(f"{name}={value}")
    typer.echo(_hint(algorithm, kid), err=True)


def variables(algorithm: Algorithm, key_id: str) -> dict[str, str]:
    """The environment variables of one new key, in the order they are printed."""
    if algorithm is Algorithm.HMAC_SHA256:
        return {
            "STEM_SIGNING_ALGORITHM": algorithm.value,
            "STEM_SIGNING_KEYS": f"{key_id}:{generate_hmac_secret()}",
            "STEM_SIGNING_ACTIVE_KEY": key_id,
        }
    public, private = generate_ed25519_pair()
    return {
        "STEM_SIGNING_ALGORITHM": algorithm.value,
        "STEM_SIGNING_PUBLIC_KEYS": f"{key_id}:{public}",
        "STEM_SIGNING_PRIVATE_KEYS": f"{key_id}:{private}",
        "STEM_SIGNING_ACTIVE_KEY": key_id,
    }


def _hint(algorithm: Algorithm, key_id: str) -> str:
    # The hint goes to stderr so `stemrun keys generate > .env` captures only the variables.
    if algorithm is Algorithm.ED25519:
        return (
            f"# new ed25519 key {key_id!r}: producers need every line; workers need only "
            "STEM_SIGNING_ALGORITHM and STEM_SIGNING_PUBLIC_KEYS. To rotate, append the new "
            "id:value to the existing lists (comma separated) before switching the active key."
        )
    return (
        f"# new hmac-sha256 key {key_id!r}: the secret is shared by producers and workers. To "
        "rotate, append the new id:secret to STEM_SIGNING_KEYS (comma separated) everywhere "
        "before switching STEM_SIGNING_ACTIVE_KEY."
    )
