"""REST API v1 of the exports app: snapshots, their files, and the threshold preview."""
