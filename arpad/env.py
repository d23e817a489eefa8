"""Small, strict readers for settings that come from the environment.

Every helper fails loudly on a value it cannot parse: a typo in production
configuration must stop the process, not silently fall back to a default.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None else value


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        parsed = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None
    if minimum is not None and parsed < minimum:
        raise ImproperlyConfigured(f"{name}={parsed} is below the minimum {minimum}")
    return parsed


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return list(default or [])
    return [item.strip() for item in value.split(",") if item.strip()]


def _url_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{value!r} is not a boolean")


def parse_database_url(url: str, *, base_dir: Path) -> dict:
    """Turn ``postgres://user:pass@host:port/name?opt=v`` or ``sqlite:///path`` into DATABASES['default']."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    options = dict(parse_qsl(parts.query))
    if scheme == "sqlite":
        # sqlite:///relative/path or sqlite:////absolute/path
        raw = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
        if not raw:
            raise ImproperlyConfigured("DATABASE_URL sqlite:/// needs a file path")
        path = Path(raw)
        if not path.is_absolute():
            path = base_dir / path
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(path),
            "OPTIONS": {
                # IMMEDIATE takes the write lock at BEGIN, so every atomic block is
                # serialised: the claim/submit read-check-write sequences stay correct
                # on SQLite, where SELECT ... FOR UPDATE does not exist.
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
            },
        }
    if scheme in {"postgres", "postgresql", "pgsql"}:
        name = unquote(parts.path.lstrip("/"))
        if not name:
            raise ImproperlyConfigured("DATABASE_URL for PostgreSQL needs a database name")
        # Django-level switches ride in the query string too; the rest goes to libpq.
        try:
            conn_max_age = int(options.pop("conn_max_age", "60"))
            health_checks = _url_bool(options.pop("conn_health_checks", "true"))
            if "server_side_binding" in options:
                options["server_side_binding"] = _url_bool(options["server_side_binding"])
            if "prepare_threshold" in options:
                # psycopg prepares a statement after this many executions on a connection;
                # Django turns that off unless it is asked for. Not behind a transaction-mode pooler.
                options["prepare_threshold"] = int(options["prepare_threshold"])
        except ValueError as exc:
            raise ImproperlyConfigured(f"DATABASE_URL option: {exc}") from None
        config = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "CONN_MAX_AGE": conn_max_age,
            "CONN_HEALTH_CHECKS": health_checks,
            "OPTIONS": options,
        }
        return config
    raise ImproperlyConfigured(f"DATABASE_URL scheme {scheme!r} is not supported (use postgres:// or sqlite:///)")


def parse_cache_url(url: str) -> dict:
    """Turn ``redis://host:6379/1`` or ``file:///path`` into CACHES['default'].

    Redis is the shared cache of a deployment with several web processes or hosts; a file
    cache (``arpad.cache.FileCache``) is shared by the processes of one machine.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in {"redis", "rediss"}:
        return {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url, "KEY_PREFIX": "arpad"}
    if scheme == "file":
        path = Path(unquote(parts.path))
        if parts.netloc or not path.is_absolute() or path == Path("/"):
            raise ImproperlyConfigured(f"CACHE_URL={url!r}: give an absolute directory, e.g. file:///var/cache/arpad")
        # Culling deletes a random third of the entries once there are this many: far above
        # what a local run holds, so that flooding it with names does not wipe the counts.
        return {"BACKEND": "arpad.cache.FileCache", "LOCATION": str(path), "OPTIONS": {"MAX_ENTRIES": 20_000}}
    raise ImproperlyConfigured(f"CACHE_URL scheme {scheme!r} is not supported (use redis://, rediss:// or file:///)")
