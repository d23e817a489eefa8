"""API v1 of policies and training rounds (``rlloop.api.urls``)."""
