"""Settings for the test suite: the production module with a test key and plain HTTP.

DATABASE_URL and CELERY_BROKER_URL still come from the environment, so the same suite
runs on SQLite locally and on PostgreSQL + Redis in CI.
"""

import os
from pathlib import Path

# Tests keep their files (SQLite test database, filesystem broker, artifacts) apart from
# a local demo that may be running from the same checkout.
os.environ.setdefault("ARPAD_VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))
os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-key-" + "x" * 50)
os.environ.setdefault("DJANGO_DEBUG", "0")
os.environ.setdefault("DJANGO_SECURE_HTTPS", "0")
os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One filesystem-broker folder per test process (inherited by the worker processes it
# starts), so that parallel test runs never take each other's messages.
os.environ.setdefault("ARPAD_BROKER_DIR", str(Path(os.environ["ARPAD_VAR_DIR"]) / f"broker-{os.getpid()}"))
# The same for the cache, which holds the throttles' counts.
os.environ.setdefault("CACHE_URL", (Path(os.environ["ARPAD_VAR_DIR"]) / f"cache-{os.getpid()}").resolve().as_uri())

from arpad.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# A job kind that exists only in tests (a model, a function, a registry line), and the
# brake the worker fault tests put on every job.
INSTALLED_APPS = [*INSTALLED_APPS, "tests.jobkinds"]  # noqa: F405
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    # A file, not :memory:, so that a real worker process can open the same test database.
    # One file per test process, so that parallel runs do not share (and destroy) it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3")}  # noqa: F405
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # noqa: F405 - whitenoise warns about a missing folder
