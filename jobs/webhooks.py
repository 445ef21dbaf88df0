"""Webhooks in the Standard Webhooks format (https://www.standardwebhooks.com/): the signing secret,
the signature, and the URLs a job may be notified at.

A URL is checked twice. At submit (the API): http or https, no credentials, a host on the operator's
allowlist (WEBHOOK_ALLOWED_HOSTS: exact names, or `*.example.com` for the names under example.com).
At delivery (a worker): the same again (the allowlist may have changed since), then the host is
resolved and every address must be public, unless the host is on the allowlist by its exact name:
a name matched by a pattern may not lead into the cluster (a DNS name pointing at 10.0.0.5, the
metadata service or loopback). The worker then connects to the address it checked, never resolving
the name a second time (jobs.runner.delivery).

Standard library only: the API and the workers both load it, and jobs.settings checks the allowlist
with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import re
import secrets
import socket
from collections.abc import Sequence
from urllib.parse import SplitResult, urlsplit

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the key; the spec asks for 24 to 64
MAX_URL_CHARS = 2048
EVENT_TYPES = ("job.succeeded", "job.failed", "job.canceled")
_NAME = re.compile(r"^(?:\*\.)?(?=[a-z0-9])[a-z0-9.-]{1,253}$")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(Exception):
    """A URL or an address a webhook may not go to; the message says why."""


# --- the secret and the signature ---


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def message_id(job_id: str, state: str) -> str:
    """The delivery's id: the same for every attempt, so that a receiver can drop a repeat."""
    return f"msg_{job_id}_{state}"


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,` and the base64 HMAC-SHA256 of "{id}.{timestamp}.{body}" under the secret's key."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(signing_secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers; one signature a secret (the current one, and the previous
    one while a rotation's overlap lasts), space-separated as the spec has it."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(s, msg_id, timestamp, body) for s in signing_secrets),
    }


# --- the allowlist ---


def check_allowlist(entries: Sequence[str]) -> None:
    """Entries are lower-case host names, IP addresses or `*.` patterns; anything else (a bare `*`,
    a scheme, a port) is a mistake the operator should hear about when the process starts."""
    for entry in entries:
        if not (_NAME.match(entry) or _ip(entry)):
            raise ValueError(
                f"WEBHOOK_ALLOWED_HOSTS: {entry!r} is not a host name, an IP address or a *.domain pattern"
            )


def _ip(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _allowed(host: str, entries: Sequence[str]) -> bool:
    return any(host == e or (e.startswith("*.") and host.endswith(e[1:])) for e in entries)


def explicitly_allowed(host: str, entries: Sequence[str]) -> bool:
    """On the allowlist by its exact name (or address): the operator vouches for where it leads."""
    return host in entries


def parse(url: str, entries: Sequence[str]) -> SplitResult:
    """`url` split, if a job may be notified there; raises Refused with the reason otherwise."""
    if not entries:
        raise Refused("webhooks are not enabled on this service (no allowed hosts are configured)")
    if len(url) > MAX_URL_CHARS:
        raise Refused(f"longer than {MAX_URL_CHARS} characters")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise Refused("a URL has no spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        raise Refused("not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise Refused("only http and https URLs")
    if "@" in parts.netloc:
        raise Refused("credentials in the URL (user:password@) are refused")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise Refused("the URL names no host")
    if not host.isascii():
        raise Refused("give the host in its ASCII (punycode) form")
    if not _allowed(host, entries):
        raise Refused(f"host {host} is not on this service's list of allowed webhook hosts")
    return parts


# --- the addresses, at delivery ---


def public(address: Address) -> bool:
    """Routable on the internet: not private, loopback, link-local, multicast, reserved or unspecified,
    including a private IPv4 address inside an IPv6 one (mapped, 6to4, Teredo, NAT64)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # the IPv4 address itself, by another name
            return public(address.ipv4_mapped)
        inner = address.sixtofour or (address.teredo or (None, None))[1]
        if inner is None and address in _NAT64:
            inner = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if inner is not None and not public(inner):
            return False
    return address.is_global and not (address.is_multicast or address.is_reserved)


def resolve(parts: SplitResult, entries: Sequence[str]) -> Address:
    """The address to connect to for a checked URL. Every address the host resolves to must be public
    unless the host is explicitly allowed; raises Refused, or OSError when the name does not resolve."""
    host = (parts.hostname or "").rstrip(".")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    literal = _ip(host)
    if literal is not None:
        found = [literal]
    else:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        found = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
    if not explicitly_allowed(host, entries):
        for address in found:
            if not public(address):
                raise Refused(
                    f"{host} resolves to {address}, a private, loopback, link-local, multicast or reserved "
                    "address (allow the host by its exact name to permit that)"
                )
    return found[0]
