"""The local cache backend: Django's file cache with counters that hold across processes.

The cache carries the login and token-endpoint throttles (``arpad.throttling``), whose counts
must be shared by every web process: gunicorn's workers each kept their own in-memory
cache, and a client got about twice the limit before the first 429. Production points
``CACHE_URL`` at Redis; a local run and the tests use this file cache. A file cache, not
Django's database cache, because the database cache needs ``createcachetable`` before the
first request, in the demo, in CI and in every test database, and a table the migrations
do not know about.

Django's file cache implements ``incr`` as a get and a set: two processes can lose a count
between them, and the set gives the key the default timeout, so a counter's window would
restart at every attempt. Here ``add`` and ``incr`` run under one lock file per cache
directory and ``incr`` keeps the key's expiry, which is what Redis does natively.
"""

from __future__ import annotations

import os
import pickle
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.filebased import FileBasedCache
from django.core.files import locks


class FileCache(FileBasedCache):
    """``FileBasedCache`` whose ``add`` and ``incr`` are atomic across processes; ``incr`` keeps the expiry."""

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._createdir()
        # Not a *.djcache name: the cache's own cull and clear never touch it.
        with open(os.path.join(self._dir, "counters.lock"), "ab") as lock:
            locks.lock(lock, locks.LOCK_EX)
            try:
                yield
            finally:
                locks.unlock(lock)

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        with self._locked():
            return super().add(key, value, timeout, version)

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> Any:
        with self._locked():
            try:
                # The cache's own files, read as FileBasedCache.get reads them, in a
                # directory it creates for this user alone (mode 0700).
                with open(self._key_to_file(key, version), "rb") as f:
                    expiry = pickle.load(f)  # noqa: S301
                    value = pickle.loads(zlib.decompress(f.read()))  # noqa: S301
            except (FileNotFoundError, EOFError):
                raise ValueError(f"Key '{key}' not found") from None
            now = time.time()
            if expiry is not None and expiry <= now:
                raise ValueError(f"Key '{key}' not found")
            new_value = value + delta
            # The same moment of expiry, as a timeout from now (None: never expires).
            self.set(key, new_value, None if expiry is None else expiry - now, version)
            return new_value
