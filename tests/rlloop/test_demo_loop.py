"""The demo's loop project: real HH-RLHF and OpenAssistant prompts, the demo policy as reference, sampling queued."""

from __future__ import annotations

import pytest

from annotation.models import Prompt, Task
from jobs.models import JobState
from rlloop.demo_loop import LOOP_NAME, load_loop_project
from rlloop.demo_policy import DEMO_POLICY_NAME
from rlloop.models import PolicyVersion, SamplingJob
from tests.conftest import SHARED_DATA as DATA
from tests.factories import UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.realdata]


@pytest.fixture
def demo(settings, tmp_path, tiny_policy):
    if not (DATA / "hh-rlhf").is_dir() or not (DATA / "oasst_en100").is_dir():
        pytest.skip(f"needs the shared data at {DATA}")
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.JOB_PROGRESS_INTERVAL_SECONDS = 0.0
    settings.RLLOOP_DEVICE = "cpu"
    # The tiny policy stands in for the converted SmolLM2 under the demo policy's name.
    settings.POLICY_BASE_MODELS = {DEMO_POLICY_NAME: str(tiny_policy)}
    return UserFactory(username="admin"), UserFactory(username="annotator")


def test_the_loop_project_holds_real_prompts_and_queues_their_sampling(demo, job_messages) -> None:
    from rlloop.jobs import sampling_execute

    admin, annotator = demo
    project, created = load_loop_project(data_dir=DATA, admin=admin, annotator=annotator)
    assert created and project.name == LOOP_NAME and project.is_pairwise
    ids = list(Prompt.objects.filter(project=project).values_list("external_id", flat=True))
    assert len(ids) == 32
    assert sum(i.startswith("hh-harmless-test-") for i in ids) == 16 and sum(i.startswith("oasst-") for i in ids) == 16
    texts = [p.last_user_text for p in Prompt.objects.filter(project=project)]
    assert all(20 <= len(t) <= 400 and "Assistant:" not in t and "Human:" not in t for t in texts)
    policy = PolicyVersion.objects.get(project=project)
    assert policy.is_reference and policy.name == DEMO_POLICY_NAME
    job = SamplingJob.objects.get(project=project)
    assert job.state == JobState.QUEUED and job.responses_per_prompt == 2 and job.sampling["max_new_tokens"] == 96
    assert project.role_of(annotator) == "annotator" and project.role_of(admin) == "manager"
    # Loading again changes nothing.
    assert load_loop_project(data_dir=DATA, admin=admin, annotator=annotator) == (project, False)
    assert SamplingJob.objects.count() == 1 and Prompt.objects.filter(project=project).count() == 32

    SamplingJob.objects.filter(pk=job.pk).update(sampling={**job.sampling, "max_new_tokens": 6})
    sampling_execute(job_id=job.pk, worker="test")
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED and job.summary["prompts"] == 32, (job.error, job.traceback)
    assert Task.objects.filter(project=project).count() == job.summary["tasks"] > 0


def test_without_the_demo_policy_or_data_the_loop_project_is_skipped(demo, settings, tmp_path, capsys) -> None:
    import io

    admin, annotator = demo
    out = io.StringIO()
    assert load_loop_project(data_dir=tmp_path, admin=admin, annotator=annotator, stdout=out) == (None, False)
    assert "needs hh-rlhf/ and oasst_en100/" in out.getvalue()
    settings.POLICY_BASE_MODELS = {}
    settings.POLICY_MODELS_DIR = str(tmp_path / "none")
    out = io.StringIO()
    assert load_loop_project(data_dir=DATA, admin=admin, annotator=annotator, stdout=out) == (None, False)
    assert "the demo policy is not converted" in out.getvalue()
