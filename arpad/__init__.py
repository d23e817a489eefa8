"""Arpad: a human-preference annotation platform that closes the RLHF loop."""

from arpad.celery import app as celery_app

__all__ = ["celery_app"]
