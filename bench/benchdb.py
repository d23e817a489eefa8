"""What the benchmarks share: a throwaway PostgreSQL database and a Django set up on it.

Each benchmark drops and re-creates a database whose name must contain "bench", runs
the migrations in a subprocess, and configures Django with production settings over
plain http, with its files under a temporary folder.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parent.parent


def database_name(url: str) -> str:
    return unquote(urlsplit(url).path.lstrip("/"))


def conninfo(url: str, database: str | None = None) -> str:
    """A psycopg connection string for ``url``, or for another database on the same server."""
    parts = urlsplit(url)
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit(("postgresql", parts.netloc, path, "", ""))


def recreate_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    name = database_name(url)
    with psycopg.connect(conninfo(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def release_database(url: str, *, created: bool, keep: bool, note: str = "") -> None:
    """End of a run: close Django's connections, then drop the database the run created
    unless ``keep`` (saying so, with ``note``)."""
    if "django" in sys.modules:
        from django.db import connections

        connections.close_all()
    if created and not keep:
        drop_database(url)
    elif created:
        print(f"kept database {url}{note}")


def drop_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(conninfo(url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database_name(url))))


def django_env(url: str, var_dir: Path) -> dict[str, str]:
    """Environment of manage.py, gunicorn and the bench's own Django: production settings, plain http."""
    static_root = var_dir / "static"
    static_root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "arpad.settings",
            "DATABASE_URL": url,
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_DEBUG": "0",
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
            "DJANGO_SECURE_HTTPS": "0",
            "ARPAD_VAR_DIR": str(var_dir),
            "DJANGO_STATIC_ROOT": str(static_root),
            "ARTIFACT_ROOT": str(var_dir / "artifacts"),
            "ARPAD_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def migrate(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=REPO_ROOT, env=env, check=True
    )


def setup_django(env: dict[str, str] | None = None) -> None:
    """Configure Django in this process (with ``env`` applied to os.environ first, if given)."""
    if env is not None:
        os.environ.update(env)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()
