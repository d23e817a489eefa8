"""A job kind that exists only in tests: proof that a new kind is a model, a function and a registry line."""

from __future__ import annotations

from django.db import models

from annotation.models import Project
from jobs.models import Job


class CountdownJob(Job):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    steps = models.PositiveIntegerField(default=5)
    pause_seconds = models.FloatField(default=0.0)
    result = models.IntegerField(null=True, blank=True)

    class Meta(Job.Meta):
        pass
