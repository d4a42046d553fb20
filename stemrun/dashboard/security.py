"""Who may use the dashboard and which POSTs are genuine: bearer/basic auth and CSRF tokens.

CSRF uses a per-process secret: the browser holds a random nonce in a SameSite=Strict cookie and
every form (or fetch) carries HMAC(secret, nonce). A forged cross-site POST has neither, and a
restarted dashboard invalidates old tokens. Every comparison is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

CSRF_COOKIE = "stemrun_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


class Guard:
    """The per-process CSRF secret and the optional access token (`STEM_DASHBOARD_TOKEN`)."""

    def __init__(self, token: str | None = None, secret: bytes | None = None) -> None:
        self.token = token or None
        self._secret = secret or secrets.token_bytes(32)

    @staticmethod
    def new_nonce() -> str:
        """A fresh random nonce for the CSRF cookie."""
        return secrets.token_urlsafe(24)

    def csrf_token(self, nonce: str) -> str:
        """The token forms must carry for a browser holding `nonce`."""
        return hmac.new(self._secret, nonce.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, nonce: str | None, token: str | None) -> bool:
        """Whether `token` was issued by this process for `nonce`."""
        if not nonce or not token:
            return False
        return hmac.compare_digest(self.csrf_token(nonce), token)

    def authorized(self, header: str | None) -> bool:
        """Whether an Authorization header grants access (always, when no token is set)."""
        if self.token is None:
            return True
        offered = _offered(header or "")
        return offered is not None and hmac.compare_digest(offered.encode(), self.token.encode())


def _offered(header: str) -> str | None:
    """The secret in `Bearer <token>` or in the password of `Basic <user:password>`."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, sep, password = decoded.partition(":")
    return password if sep else None
