"""Settings that work but weaken security: found at load time, shown as warnings.

docs/security.md ("Warnings") lists them:

- a signing secret written into stem.yaml. It belongs in the environment (`${VAR}` or the
  STEM_SIGNING_* variables), not in a file that is committed, copied into images and shown in
  reviews. A value that is only a reference, `${VAR}` or `${VAR:-}`, keeps the secret out;
  anything else, a `${VAR:-default}` with its default included, puts secret material in the file;
- `tls.allow_insecure` while a store uses TLS: encrypted, but nobody checks who answers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from stemrun.config.model import TlsConfig
from stemrun.config.problem import Problem, YamlPath
from stemrun.url import scheme_of

#: signing sections whose values are secrets: what each holds, and the variable to use instead.
SECRET_SECTIONS = {
    "keys": ("HMAC secret", "STEM_SIGNING_KEYS"),
    "private_keys": ("ed25519 private key", "STEM_SIGNING_PRIVATE_KEYS"),
}
#: URL schemes whose stores use the tls section (rediss always, Postgres when it is present).
TLS_SCHEMES = frozenset({"rediss", "postgresql", "postgres"})

_REFERENCE_ONLY = re.compile(r"\s*\$\{[A-Za-z_][A-Za-z0-9_]*(:-)?\}\s*")


def literal_secrets(data: Any, sources: Mapping[YamlPath, str]) -> list[Problem]:
    """One warning per signing secret written in the file (`data` as parsed, before `${}`).

    Sections replaced by a STEM_SIGNING_* variable (named in `sources`) are not in effect, so
    not reported. The messages name the key id, never the secret.
    """
    signing = data.get("signing") if isinstance(data, dict) else None
    if not isinstance(signing, dict):
        return []
    return [found for section in SECRET_SECTIONS for found in _section(signing, section, sources)]


def _section(
    signing: dict[str, Any], section: str, sources: Mapping[YamlPath, str]
) -> Iterator[Problem]:
    keys = signing.get(section)
    if ("signing", section) in sources or not isinstance(keys, dict):
        return
    what, variable = SECRET_SECTIONS[section]
    for key_id, value in keys.items():
        if not isinstance(value, str) or not value.strip() or _REFERENCE_ONLY.fullmatch(value):
            continue
        message = (
            f"the {what} of key {key_id!r} is written in the file; keep it in the environment "
            f"instead: a ${{VAR}} reference without a default, or {variable} "
            '(docs/security.md, "Warnings")'
        )
        yield Problem(path=("signing", section, key_id), message=message)


def uses_tls(url: str, tls: TlsConfig | None) -> bool:
    """Whether the store at `url` connects with TLS, and so with the tls section's settings."""
    scheme = scheme_of(url)
    return scheme == "rediss" or (tls is not None and scheme in TLS_SCHEMES)


def insecure_tls(tls: TlsConfig | None, urls: Mapping[str, str]) -> Problem | None:
    """The warning while `allow_insecure` weakens a store of `urls` (role -> URL), else None."""
    if tls is None or not tls.allow_insecure:
        return None
    roles = [role.replace("_", " ") for role, url in urls.items() if uses_tls(url, tls)]
    if not roles:
        return None
    message = (
        f"verification is off: TLS to the {', '.join(roles)} is encrypted but the server's "
        "certificate and host name are not checked, so anyone in between can read and change "
        "the traffic; turn it off once the certificates are fixed (docs/tls.md)"
    )
    return Problem(path=("tls", "allow_insecure"), message=message)
