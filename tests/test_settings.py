"""Settings fail closed: a production process without its configuration refuses to start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from arpad.env import env_bool, env_int, parse_database_url

ROOT = Path(__file__).resolve().parent.parent


def run_check(**env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE_URL"))}
    clean.update(env, DJANGO_SETTINGS_MODULE="arpad.settings")
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=120
    )


def test_production_without_secret_key_refuses_to_start():
    result = run_check(DJANGO_ALLOWED_HOSTS="example.org")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in result.stderr


def test_production_without_allowed_hosts_refuses_to_start():
    result = run_check(DJANGO_SECRET_KEY="k" * 60)
    assert result.returncode != 0
    assert "DJANGO_ALLOWED_HOSTS is empty" in result.stderr


def test_typo_in_a_boolean_refuses_to_start():
    result = run_check(DJANGO_DEBUG="ture")
    assert result.returncode != 0
    assert "DJANGO_DEBUG='ture' is not a boolean" in result.stderr


def test_debug_run_starts_without_configuration():
    result = run_check(DJANGO_DEBUG="1", ARPAD_VAR_DIR=str(ROOT / "var" / "test"))
    assert result.returncode == 0, result.stderr


def test_env_helpers(monkeypatch):
    monkeypatch.setenv("X_FLAG", "yes")
    assert env_bool("X_FLAG") is True
    monkeypatch.setenv("X_NUM", "-3")
    with pytest.raises(ImproperlyConfigured):
        env_int("X_NUM", 1, minimum=0)
    monkeypatch.setenv("X_NUM", "three")
    with pytest.raises(ImproperlyConfigured):
        env_int("X_NUM", 1)


def test_database_urls():
    pg = parse_database_url("postgres://u:p%40ss@db.internal:6543/arpad?sslmode=require", base_dir=ROOT)
    assert (pg["ENGINE"], pg["NAME"], pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"]) == (
        "django.db.backends.postgresql",
        "arpad",
        "u",
        "p@ss",
        "db.internal",
        "6543",
    )
    assert pg["OPTIONS"] == {"sslmode": "require"}
    lite = parse_database_url("sqlite:///var/x.sqlite3", base_dir=ROOT)
    assert lite["NAME"] == str(ROOT / "var" / "x.sqlite3")
    assert lite["OPTIONS"]["transaction_mode"] == "IMMEDIATE"
    with pytest.raises(ImproperlyConfigured):
        parse_database_url("mysql://x/y", base_dir=ROOT)
    with pytest.raises(ImproperlyConfigured):
        parse_database_url("postgres://host/", base_dir=ROOT)
