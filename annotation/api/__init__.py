"""REST API v1 for the annotation app."""
