"""Store URLs: scheme detection and password masking for messages."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def scheme_of(url: str) -> str:
    """The URL's scheme, lower-cased ('' when there is none)."""
    return urlsplit(url).scheme.lower()


def mask_url(url: str) -> str:
    """The URL with any password replaced by '***', safe to print."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{user}:***@{host}{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
