"""What the admin API and the logs may show of a configured credential: that it is set, never its value.

Credentials in the settings: client and admin tokens, the events' hash key (with it anyone
could test a guess against an ``args_hash``), upstream headers (``Authorization`` …) and stdio
environments (API keys), passwords in URLs (Redis, upstreams), and remediation webhook URLs
(a Slack-style hook's path is its secret).
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_url", "redacted_settings", "HIDDEN"]

HIDDEN = "***"


def redact_url(url: str, keep_path: bool = True) -> str:
    """``url`` without its user name, password and query (and, with ``keep_path=False``, its path):
    enough to tell which endpoint it is."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:  # not a URL we can take apart: show nothing of it
        return HIDDEN
    if not parts.netloc:  # no "//": "user:password@host" would read as a scheme and a path
        return HIDDEN if "@" in url or not keep_path else url
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    if parts.username is not None or parts.password is not None:
        netloc = f"{HIDDEN}@{netloc}"
    path = parts.path if keep_path or parts.path in ("", "/") else f"/{HIDDEN}"
    return urlunsplit((parts.scheme, netloc, path, HIDDEN if parts.query else "", ""))


def redacted_settings(settings: Any) -> dict[str, Any]:
    """The settings as JSON-ready data, every credential replaced by whether it is set."""
    config = dataclasses.asdict(settings)
    auth = settings.auth
    config["auth"] = {"tokens": f"{len(auth.tokens)} configured", "admin_token": "set" if auth.admin_token else "not set"}
    config["events"]["hash_key"] = "set" if settings.events.hash_key else "not set"
    config["store"]["redis_url"] = redact_url(settings.store.redis_url)
    for server in config["servers"]:
        for replica in server["replicas"]:
            replica["headers"] = dict.fromkeys(replica["headers"], HIDDEN)  # names say what is sent, not the values
            replica["env"] = dict.fromkeys(replica["env"], HIDDEN)
            if replica["url"]:
                replica["url"] = redact_url(replica["url"])
        remediation = server["remediation"]
        remediation["webhook"] = redact_url(remediation["webhook"], keep_path=False)
    return config
