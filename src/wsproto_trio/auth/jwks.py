"""A JWKS document (``AUTH_JWKS_URL``), fetched off the event loop and cached by ``kid``.

Rules:
- the document is fetched on first use; a ``kid`` it does not hold refetches it,
  at most once per ``REFETCH_INTERVAL`` (10 s) whatever the traffic, so tokens
  with made-up ``kid``\\s cannot hammer the identity provider;
- a cached document older than ``MAX_AGE`` is refetched on the next use (a key
  the provider withdrew stops working); if that fails the old keys stay;
- one fetch at a time: concurrent handshakes that need it wait for the same one;
- fetching blocks (urllib, file reads), so it runs in a worker thread with a
  timeout; it has no side effect beyond its result.

``http(s)://`` is fetched with ``PyJWKClient.fetch_data`` (no redirects followed);
``file://`` is read directly (PyJWKClient refuses that scheme).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import trio
from jwt import PyJWKClient
from jwt.api_jwk import PyJWK
from jwt.exceptions import PyJWKClientError, PyJWTError

from ..errors import KeysUnavailable
from .keys import VerificationKey, algorithms_for

log = logging.getLogger("wsproto_trio.auth")

REFETCH_INTERVAL = 10.0
MAX_AGE = 300.0
FETCH_TIMEOUT = 5.0
MAX_DOCUMENT_BYTES = 1024 * 1024

Fetch = Callable[[], Mapping[str, Any]]


def fetcher(url: str, timeout: float = FETCH_TIMEOUT) -> Fetch:
    """A blocking function returning the JSON document at ``url``; ``KeysUnavailable`` if not."""
    if urlsplit(url).scheme == "file":
        return lambda: _read_file(url)
    client = PyJWKClient(url, cache_jwk_set=False, timeout=timeout)

    def fetch_http() -> Mapping[str, Any]:
        try:
            data = client.fetch_data()
        except (PyJWKClientError, OSError, ValueError) as exc:
            # ValueError: a body that is not JSON; OSError: a read cut short.
            raise KeysUnavailable(f"cannot fetch the JWKS: {exc}") from None
        if not isinstance(data, dict):
            raise KeysUnavailable("the JWKS is not a JSON object")
        return data

    return fetch_http


def _read_file(url: str) -> Mapping[str, Any]:
    path = url2pathname(urlsplit(url).path)
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as exc:
        raise KeysUnavailable(f"cannot read the JWKS {path!r}: {exc.strerror or exc}") from None
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise KeysUnavailable(f"the JWKS {path!r} is over {MAX_DOCUMENT_BYTES} bytes")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise KeysUnavailable(f"the JWKS {path!r} is not JSON") from None
    if not isinstance(data, dict):
        raise KeysUnavailable(f"the JWKS {path!r} is not a JSON object")
    return data


def parse(document: Mapping[str, Any]) -> dict[str, VerificationKey]:
    """The usable signing keys of a JWKS by ``kid``; unusable entries are logged and skipped."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise KeysUnavailable("the JWKS has no 'keys' list")
    keys: dict[str, VerificationKey] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        try:
            kid, key = jwk_key(entry)
        except ValueError as exc:
            log.warning("JWKS entry skipped: %s", exc)
            continue
        keys[kid] = key
    return keys


def jwk_key(data: dict[str, Any]) -> tuple[str, VerificationKey]:
    """A JWKS entry as ``(kid, key)``; ``ValueError`` says why an entry is unusable.

    The algorithms are those of the key's type, narrowed to its ``alg`` when it
    names one (an ``alg`` its type does not allow makes the entry unusable).
    """
    kid = data.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ValueError("it has no kid")
    if data.get("use", "sig") != "sig":
        raise ValueError(f"key {kid!r} is not a signing key (use {data.get('use')!r})")
    if data.get("kty") == "oct":
        raise ValueError(f"key {kid!r} is a symmetric (oct) key; a JWKS must hold public keys")
    if "d" in data:
        raise ValueError(f"key {kid!r} holds private material; refusing it")
    try:
        key = PyJWK(data).key
    except PyJWTError as exc:
        raise ValueError(f"key {kid!r}: {exc}") from None
    algorithms = algorithms_for(key)
    alg = data.get("alg")
    if alg is not None:
        if alg not in algorithms:
            raise ValueError(f"key {kid!r}: alg {alg!r} does not fit its key type")
        algorithms = (alg,)
    return kid, VerificationKey(key, algorithms)


class JwksKeys:
    """The keys of one JWKS URL. ``clock`` is trio's by default (tests pass ``MockClock``'s)."""

    def __init__(
        self,
        url: str,
        *,
        fetch: Fetch | None = None,
        clock: Callable[[], float] = trio.current_time,
        refetch_interval: float = REFETCH_INTERVAL,
        max_age: float = MAX_AGE,
    ) -> None:
        self.url = url
        self._fetch = fetch if fetch is not None else fetcher(url)
        self._clock = clock
        self._refetch_interval = refetch_interval
        self._max_age = max_age
        self._keys: dict[str, VerificationKey] = {}
        self._fetched_at = -math.inf  # last successful fetch
        self._tried_at = -math.inf  # last attempt, successful or not
        self._lock = trio.Lock()
        self._error = "not fetched yet"  # why the last attempt failed
        self.fetches = 0  # attempts, for tests and metrics

    async def key(self, kid: str) -> VerificationKey | None:
        """The key for ``kid``, fetching the document if it is due; ``None`` if unknown.

        ``KeysUnavailable`` when no document could ever be fetched (the server
        cannot tell a good token from a bad one: not the client's fault).
        """
        now = self._clock()
        if kid in self._keys and now - self._fetched_at < self._max_age:
            return self._keys[kid]
        async with self._lock:
            now = self._clock()
            stale = now - self._fetched_at >= self._max_age
            if (kid not in self._keys or stale) and now - self._tried_at >= self._refetch_interval:
                await self._refetch(now)
            if self._fetched_at == -math.inf:
                every = f"{self._refetch_interval:g} s"
                raise KeysUnavailable(f"no JWKS yet ({self._error}); retried at most every {every}")
            return self._keys.get(kid)

    async def _refetch(self, now: float) -> None:
        self._tried_at = now
        self.fetches += 1
        try:
            # No abandon_on_cancel: the fetch is bounded by its own timeout,
            # and a thread left running would outlive its owner.
            document = await trio.to_thread.run_sync(self._fetch)
            keys = parse(document)
        except KeysUnavailable as exc:
            self._error = str(exc)
            log.warning("%s (AUTH_JWKS_URL); keeping %d cached keys", exc, len(self._keys))
            return
        self._keys = keys
        self._fetched_at = self._clock()
        log.info("JWKS loaded: %d signing keys (%s)", len(keys), ", ".join(sorted(keys)) or "none")
