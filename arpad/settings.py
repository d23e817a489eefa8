"""Arpad settings, read from the environment and failing closed.

Without any environment the process refuses to start: there is no default secret
key and DEBUG is off. The local quick start (``make demo``) sets DJANGO_DEBUG=1
and a generated key, and runs on the embedded defaults: a SQLite file, a
filesystem broker that needs no server, and artifacts under ``var/``.
Production sets DATABASE_URL (PostgreSQL), CELERY_BROKER_URL (Redis),
ARTIFACT_ROOT, DJANGO_SECRET_KEY and DJANGO_ALLOWED_HOSTS; see the README.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from csp.constants import NONCE
from django.core.exceptions import ImproperlyConfigured

from arpad.env import env_bool, env_int, env_list, env_str, parse_cache_url, parse_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("ARPAD_VAR_DIR") or BASE_DIR / "var")

DEBUG = env_bool("DJANGO_DEBUG", False)

SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Set it (50+ random characters) or run locally with DJANGO_DEBUG=1."
        )
    # A per-process key is good enough for a debug run; `make demo` passes a stable one.
    SECRET_KEY = "debug-only-" + secrets.token_urlsafe(48)

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost"] if DEBUG else [])
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS is empty: list the host names this deployment answers to.")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "arpad.admin_site.AdminConfig",  # django.contrib.admin with a login that limits password guessing
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "arpad",
    "jobs",
    "annotation",
    "accounts",
    "exports",
    "rewardmodel",
    "rlloop",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # A request that finds the database unreachable gets 503 + Retry-After, not a 500.
    "arpad.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "arpad.urls"
WSGI_APPLICATION = "arpad.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "csp.context_processors.nonce",
            ],
        },
    },
]

DATABASES = {
    "default": parse_database_url(
        env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'arpad.sqlite3'}",
        base_dir=BASE_DIR,
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The throttles count in this cache, so it must be one that every web process shares:
# Redis in production (CACHE_URL=redis://host:6379/1, its own database number: clearing
# the cache flushes that database), else files under var/ (arpad/cache.py says why files
# and not the database cache), shared by the processes of this machine.
CACHES = {"default": parse_cache_url(env_str("CACHE_URL") or (VAR_DIR / "cache").resolve().as_uri())}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(env_str("DJANGO_STATIC_ROOT") or VAR_DIR / "static")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# --- Logins and API tokens --------------------------------------------------------------
# Failed password checks (web login, admin login, token endpoint) counted per account and
# per client address over a window; past either limit, attempts are refused with a 429
# until the window that started at the first failure ends (arpad/throttling.py).
ARPAD_LOGIN_MAX_FAILURES_PER_ACCOUNT = env_int("ARPAD_LOGIN_MAX_FAILURES_PER_ACCOUNT", 10, minimum=1)
ARPAD_LOGIN_MAX_FAILURES_PER_ADDRESS = env_int("ARPAD_LOGIN_MAX_FAILURES_PER_ADDRESS", 30, minimum=1)
ARPAD_LOGIN_WINDOW_SECONDS = env_int("ARPAD_LOGIN_WINDOW_SECONDS", 900, minimum=1)
# Requests per minute and address to the token endpoint, whatever they send.
ARPAD_TOKEN_REQUESTS_PER_MINUTE = env_int("ARPAD_TOKEN_REQUESTS_PER_MINUTE", 60, minimum=1)
# An API token stops working this many days after it was issued (arpad/authentication.py).
ARPAD_API_TOKEN_MAX_AGE_DAYS = env_int("ARPAD_API_TOKEN_MAX_AGE_DAYS", 30, minimum=1)
# Named API tokens (accounts app): how many live ones (neither revoked nor expired) a user may hold.
ARPAD_API_TOKENS_PER_USER = env_int("ARPAD_API_TOKENS_PER_USER", 20, minimum=1)
# Invitation links (accounts app): hours a link works, and links one manager may create per 24 hours.
ARPAD_INVITATION_MAX_AGE_HOURS = env_int("ARPAD_INVITATION_MAX_AGE_HOURS", 72, minimum=1)
ARPAD_INVITATIONS_PER_DAY = env_int("ARPAD_INVITATIONS_PER_DAY", 50, minimum=1)
# Proxies in front of the web process, each appending the address it saw to X-Forwarded-For:
# the client's address is the one the outermost of them wrote. 0: the header is ignored
# (anyone can write anything in it) and the peer's address counts.
ARPAD_NUM_PROXIES = env_int("ARPAD_NUM_PROXIES", 0, minimum=0)

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# Artifacts (uploaded import files, exports, models) live in one directory that the
# web process and the workers share.
ARTIFACT_ROOT = Path(env_str("ARTIFACT_ROOT") or VAR_DIR / "artifacts")
# Checkpoint directories a project may register as policies, by directory name (rlloop.bases);
# the demo policy is converted into it (manage.py fetch_demo_policy).
POLICY_MODELS_DIR = Path(env_str("POLICY_MODELS_DIR") or VAR_DIR / "models" / "policies")
# Import limits (annotation/importers/reader.py): decompressed bytes of one file, its lines
# (blank ones too) or the items of a JSON list, and characters of any single text field (a
# line or item holds at most 64 of them). Raise the first two for a file beyond them.
ARPAD_IMPORT_MAX_BYTES = env_int("ARPAD_IMPORT_MAX_BYTES", 512 * 1024**2, minimum=1024)
ARPAD_IMPORT_MAX_RECORDS = env_int("ARPAD_IMPORT_MAX_RECORDS", 1_000_000, minimum=1)
ARPAD_IMPORT_MAX_FIELD_CHARS = env_int("ARPAD_IMPORT_MAX_FIELD_CHARS", 200_000, minimum=100)
# The job lifecycle (jobs/conf.py) reads JOB_HEARTBEAT_STALE_SECONDS, JOB_MAX_ATTEMPTS and
# JOB_PROGRESS_INTERVAL_SECONDS from the environment when a job needs them.
# The largest body any endpoint reads, files apart (an import file streams to disk under
# ARPAD_IMPORT_MAX_BYTES): the manager's forms. The annotators' endpoints cap theirs far
# lower (arpad.http.body_limit).
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024**2
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024**2

# --- HTTPS and cookies -----------------------------------------------------------------
# On by default outside DEBUG; a deployment that terminates TLS elsewhere sets
# DJANGO_SECURE_PROXY_SSL_HEADER=1 so Django trusts X-Forwarded-Proto.
SECURE_HTTPS = env_bool("DJANGO_SECURE_HTTPS", not DEBUG)
SECURE_SSL_REDIRECT = SECURE_HTTPS
SESSION_COOKIE_SECURE = SECURE_HTTPS
CSRF_COOKIE_SECURE = SECURE_HTTPS
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31_536_000 if SECURE_HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", SECURE_HSTS_SECONDS > 0)
if env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"

# Content-Security-Policy (django-csp 4): no inline script without the per-request nonce
# (added to the header only on responses whose template used it), no third-party origin.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'", NONCE],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

# --- REST API ----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "arpad.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # DRF's JSON parser with a nesting limit (arpad/parsers.py).
    "DEFAULT_PARSER_CLASSES": [
        "arpad.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + (["rest_framework.renderers.BrowsableAPIRenderer"] if DEBUG else []),
    "DEFAULT_THROTTLE_RATES": {"anon": f"{ARPAD_TOKEN_REQUESTS_PER_MINUTE}/minute"},
    # The client address the throttles count by (arpad.throttling.client_address).
    "NUM_PROXIES": ARPAD_NUM_PROXIES,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Arpad API",
    "DESCRIPTION": "Human-preference annotation for RLHF: projects, work queue, judgements, import.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        # The refusals every operation can give (401/403/404/413/414/429/503), in one place.
        "arpad.api.schema.add_standard_responses",
    ],
}

# --- Celery ------------------------------------------------------------------------------
# Without CELERY_BROKER_URL the broker is a directory (kombu's filesystem transport): a
# real worker process, no server. Production uses Redis.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or "filesystem://"
CELERY_BROKER_TRANSPORT_OPTIONS: dict = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = Path(env_str("ARPAD_BROKER_DIR") or VAR_DIR / "broker")
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
    # The transport expects its folders to exist; web and worker both create them.
    for _folder in ("queue", "processed", "control"):
        (_broker_dir / _folder).mkdir(parents=True, exist_ok=True)
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Long GPU jobs must not be redelivered while they are still running.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 12 * 3600)}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("ARPAD_LOG_LEVEL") or "INFO"},
    "loggers": {"django.db.backends": {"level": "INFO"}},
}
