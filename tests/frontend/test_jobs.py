"""The pages every job kind has: the project's jobs (all kinds, live bars) and cancel."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from jobs.models import JobState
from tests.jobkinds.models import CountdownJob
from tests.jobs.test_lifecycle import KINDS, queued_job

pytestmark = pytest.mark.django_db


def as_user(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_every_kind_appears_with_its_bar_and_a_cancel_button(project, manager):
    jobs = [queued_job(label, project=project) for label in KINDS]
    response = as_user(manager).get(reverse("project-jobs", args=[project.pk]))
    assert response.status_code == 200
    body = response.content.decode()
    for job in jobs:
        assert f'data-job-url="/api/v1/projects/{project.pk}/jobs/{job.kind}/{job.pk}/"' in body
        assert reverse("job-cancel", args=[project.pk, job.kind, job.pk]) in body
    assert 'aria-current="page">Jobs<' in body and "jobs.js" in body
    assert "<td>Export snapshot</td>" in body and "<td>Reward-model run</td>" in body  # kinds in words
    only = as_user(manager).get(reverse("project-jobs", args=[project.pk]), {"kind": "countdown"}).content.decode()
    assert only.count('class="job-progress"') == 1


def test_cancel_from_the_page(project, manager):
    job = queued_job("countdown", project=project)
    url = reverse("job-cancel", args=[project.pk, "countdown", job.pk])
    response = as_user(manager).post(url)
    assert response.status_code == 302 and response["Location"] == reverse("project-jobs", args=[project.pk])
    assert CountdownJob.objects.get(pk=job.pk).state == JobState.CANCELLED
    assert as_user(manager).get(url).status_code == 405
    assert as_user(manager).post(reverse("job-cancel", args=[project.pk, "nope", job.pk])).status_code == 404


def test_personas(project, manager, annotator, outsider, other_project):
    job = queued_job("countdown", project=project)
    theirs = queued_job("countdown", project=other_project)
    for method, url in [
        ("get", reverse("project-jobs", args=[project.pk])),
        ("post", reverse("job-cancel", args=[project.pk, "countdown", job.pk])),
    ]:
        assert getattr(as_user(outsider), method)(url).status_code == 404, url
        assert getattr(as_user(annotator), method)(url).status_code == 403, url
        anonymous = getattr(Client(), method)(url)
        assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"], url
    assert as_user(manager).post(reverse("job-cancel", args=[project.pk, "countdown", theirs.pk])).status_code == 404
    assert CountdownJob.objects.get(pk=theirs.pk).state == JobState.QUEUED
    assert CountdownJob.objects.get(pk=job.pk).state == JobState.QUEUED
