"""Imports under hostile or merely large input: bounded lines and records, a JSON list read as a
stream, a queue of their own, and uploads that do not outlive their job.

Issue 13, finding 5: a 51 KB gzip of 50 MB blank lines held the only default worker for 25 s,
and a PandaLM file was held in memory twice over (its bytes and its text) while it was parsed.
"""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from annotation.import_jobs import import_job_create
from annotation.importers import ImportFailed, import_file
from annotation.importers import reader as reader_module
from annotation.importers.base import ErrorCollector, ImportContext, ImportSummary, RecordError, StopImport
from annotation.importers.reader import InputFile
from annotation.models import ImportJob, ImportJobState, Prompt
from jobs.lifecycle import job_cancel, job_execute, jobs_reap
from jobs.registry import get_kind
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def artifacts(settings, tmp_path) -> Path:
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.JOB_PROGRESS_INTERVAL_SECONDS = 0.0
    return settings.ARTIFACT_ROOT


def refused(**kwargs: Any) -> ImportFailed:
    with pytest.raises(ImportFailed) as caught:
        import_file(**kwargs)
    return caught.value


def pandalm_item(i: int, text: str = "") -> dict[str, Any]:
    return {
        "idx": i,
        "instruction": f"Question {i}? {text}",
        "input": "",
        "response1": f"first {i} {text}",
        "response2": f"second {i} {text}",
        "annotator1": 1,
        "annotator2": 2,
        "annotator3": 1,
    }


def context(project, path: Path) -> ImportContext:
    return ImportContext(
        project=project,
        path=path,
        display_name=path.name,
        format="pandalm",
        options={},
        errors=ErrorCollector(path.name),
        summary=ImportSummary(),
        progress=lambda fraction: None,
    )


def read_list(project, path: Path) -> tuple[list[tuple[int, int, Any]], tuple[int | None, str | None, str] | None]:
    """Every (line, index, item) the streamed reader yields, and the error it stopped at."""
    ctx = context(project, path)
    items: list[tuple[int, int, Any]] = []
    try:
        for entry in InputFile(ctx).json_list():
            items.append(entry)
    except RecordError as exc:
        return items, (exc.line, exc.field, exc.message)
    except StopImport:
        error = ctx.errors.errors[-1]
        return items, (error.line, error.field, error.message)
    return items, None


# --- lines and records ------------------------------------------------------------------------


def test_blank_lines_count_against_the_record_limit(project, tmp_path, settings):
    settings.ARPAD_IMPORT_MAX_RECORDS = 1000
    path = tmp_path / "blank.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n" * 200_000))
    error = refused(project=project, path=path, format="jsonl").errors[-1]
    # Refused at the first line past the limit, not after reading all 200,000 of them.
    assert (error.line, error.field) == (1001, "file")
    assert "ARPAD_IMPORT_MAX_RECORDS" in error.message and "blank ones included" in error.message


def test_a_gzip_bomb_of_blank_lines_is_refused_at_the_default_limit(project, tmp_path, settings):
    path = tmp_path / "bomb.jsonl.gz"
    path.write_bytes(gzip.compress(b"\n" * (settings.ARPAD_IMPORT_MAX_RECORDS + 500_000), compresslevel=9))
    assert path.stat().st_size < 10_000
    error = refused(project=project, path=path, format="jsonl").errors[-1]
    assert (error.line, error.field) == (settings.ARPAD_IMPORT_MAX_RECORDS + 1, "file")


def test_the_items_of_a_json_list_count_against_the_record_limit(project, tmp_path, settings):
    settings.ARPAD_IMPORT_MAX_RECORDS = 3
    path = tmp_path / "five.json"
    path.write_text("[\n" + ",\n".join(json.dumps(pandalm_item(i)) for i in range(5)) + "\n]\n")
    error = refused(project=project, path=path, format="pandalm").errors[-1]
    assert (error.line, error.field) == (5, "file") and "more than 3 items" in error.message
    assert not Prompt.objects.exists()


# --- the JSON list, read as a stream --------------------------------------------------------


LIST_CASES = {
    # Multi-byte characters, escapes, numbers and literals, items over several lines, a BOM.
    "valid": "\ufeff[\n"
    + ",\n".join(json.dumps(pandalm_item(i, "caf\u00e9 \u65e5\u672c \U0001f600 \\u00e9"), indent=1) for i in range(6))
    + ',\n{"idx": 123456789, "x": [true, false, null, -1.5e3, 0.25], "s": "a\\"b\\\\c"}\n]\n',
    "broken item": '[\n{"idx": 0},\n{"idx": 1,\n "a": [1, 2,, 3]},\n{"idx": 2}\n]\n',
    "trailing text": '[{"idx": 0}, {"idx": 1}]\n  nonsense\n',
    "missing comma": '[\n{"idx": 0}\n{"idx": 1}\n]',
    "not closed": '[\n{"idx": 0},\n{"idx": 1}\n',
    "not a list": '\n\n{"idx": 0}\n',
    "huge number": '[{"idx": 0}, {"idx": 1, "n": 1e400}]',
}


@pytest.mark.parametrize("case", sorted(LIST_CASES))
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1000])
def test_items_lines_and_errors_do_not_depend_on_where_chunks_end(project, tmp_path, monkeypatch, case, chunk):
    path = tmp_path / "list.json"
    path.write_text(LIST_CASES[case], encoding="utf-8")
    whole = read_list(project, path)  # the default chunk holds the whole file
    monkeypatch.setattr(reader_module, "_CHUNK", chunk)
    assert read_list(project, path) == whole


def test_the_streamed_list_gives_each_item_with_the_line_it_starts_on(project, tmp_path):
    path = tmp_path / "list.json"
    path.write_text(LIST_CASES["valid"], encoding="utf-8")
    items, error = read_list(project, path)
    assert error is None
    assert [item for _, _, item in items] == json.loads(LIST_CASES["valid"].removeprefix("\ufeff"))
    # Items are written one per "{" at the start of a line (nested objects are indented).
    starts = [n + 1 for n, text in enumerate(LIST_CASES["valid"].splitlines()) if text.startswith("{")]
    assert [line for line, _, _ in items] == starts and [index for _, index, _ in items] == list(range(7))


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("broken item", (4, "[1]", "invalid JSON: Expecting value (column 13)")),
        ("trailing text", (2, "json", "unexpected text after the end of the list")),
        ("missing comma", (3, "json", "expected ',' or ']' after item 0")),
        ("not a list", (3, "json", "the file must be a JSON list ([ {...}, {...} ])")),
        ("huge number", (1, "[1]", "invalid JSON: the number 1e400 is too large")),
    ],
)
def test_a_broken_list_is_refused_on_its_line(project, tmp_path, monkeypatch, case, expected):
    path = tmp_path / "list.json"
    path.write_text(LIST_CASES[case], encoding="utf-8")
    monkeypatch.setattr(reader_module, "_CHUNK", 5)
    assert read_list(project, path)[1] == expected


@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_invalid_utf8_in_a_list_names_its_line_and_byte(project, tmp_path, monkeypatch, chunk):
    path = tmp_path / "latin.json"
    path.write_bytes(b'[\n{"idx": 0},\n{"idx": 1, "t": "caf\xe9"}\n]\n')
    monkeypatch.setattr(reader_module, "_CHUNK", chunk)
    assert read_list(project, path)[1] == (3, "encoding", "not valid UTF-8 at byte 21 of the line")


def test_an_item_longer_than_a_line_is_refused_without_reading_on(project, tmp_path, settings, monkeypatch):
    settings.ARPAD_IMPORT_MAX_FIELD_CHARS = 100  # an item may hold 64 of them: 6,400 characters
    monkeypatch.setattr(reader_module, "_CHUNK", 1000)
    path = tmp_path / "long.json"
    path.write_text('[{"idx": 0, "instruction": "' + "x" * 2_000_000 + '"}]')
    ctx = context(project, path)
    with pytest.raises(RecordError) as caught:
        list(InputFile(ctx).json_list())
    assert (caught.value.field, caught.value.message) == ("[0]", "is longer than 6,400 characters")


def test_reading_a_large_list_holds_about_one_chunk_not_the_file(project, tmp_path):
    path = tmp_path / "big.json"
    filler = "lorem ipsum dolor sit amet " * 30
    path.write_text("[\n" + ",\n".join(json.dumps(pandalm_item(i, filler)) for i in range(12_000)) + "\n]\n")
    size = path.stat().st_size
    assert size > 20 * 1024**2
    ctx = context(project, path)
    tracemalloc.start()
    try:
        count = sum(1 for _ in InputFile(ctx).json_list())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 12_000
    # The whole file as bytes and as text was twice its size; a chunk or two of each is the bound.
    assert peak < 6 * 1024**2, f"peak {peak / 1024**2:.1f} MB reading a {size / 1024**2:.0f} MB file"


# --- the queue ------------------------------------------------------------------------------


def test_imports_have_a_queue_of_their_own_that_every_worker_setup_listens_to():
    from arpad.celery import app

    assert get_kind("import").queue_name() == "imports"
    assert get_kind("export").queue_name() == "default"  # an import never waits for an export, nor the reverse
    assert "imports" in {queue.name for queue in app.conf.task_queues}
    # Production runs a worker of its own on it, the demo too; the tests' worker listens to it.
    compose = (REPO_ROOT / "docker-compose.yml").read_text()
    assert '"worker", "-Q", "imports"' in compose
    assert '"-Q", "imports"' in (REPO_ROOT / "scripts" / "demo.py").read_text()
    assert '"-Q", "default,imports"' in (REPO_ROOT / "tests" / "conftest.py").read_text()


# --- uploads --------------------------------------------------------------------------------

GOOD = b'{"id": "a", "prompt": "Why?", "responses": ["Because.", "No idea."]}\n'


def upload(project, manager, content: bytes = GOOD) -> tuple[ImportJob, Path]:
    job = import_job_create(
        project=project,
        user=manager,
        uploaded_file=SimpleUploadedFile("items.jsonl", content),
        format="jsonl",
        options={},
    )
    path = Path(job.file_path)
    assert path.is_file()
    return job, path


def test_the_upload_is_removed_once_the_import_succeeded(project, manager, django_capture_on_commit_callbacks):
    job, path = upload(project, manager)
    with django_capture_on_commit_callbacks(execute=True):
        job = job_execute(kind="import", job_id=job.pk, worker="w")
    assert job.state == ImportJobState.SUCCEEDED and Prompt.objects.filter(project=project).count() == 1
    assert not path.exists()


def test_the_upload_is_removed_when_the_file_is_refused(project, manager):
    job, path = upload(project, manager, b"not json\n")
    job = job_execute(kind="import", job_id=job.pk, worker="w")
    assert job.state == ImportJobState.FAILED and job.errors[0]["line"] == 1
    assert not path.exists()


def test_the_upload_is_removed_when_the_importer_crashes(project, manager, monkeypatch):
    from annotation import jobs as import_kind

    def crash(**kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(import_kind, "import_file", crash)
    job, path = upload(project, manager)
    job = job_execute(kind="import", job_id=job.pk, worker="w")
    assert job.state == ImportJobState.FAILED and "a bug" in job.error
    assert not path.exists()


def test_the_upload_is_removed_when_a_queued_import_is_cancelled(project, manager, django_capture_on_commit_callbacks):
    job, path = upload(project, manager)
    with django_capture_on_commit_callbacks(execute=True):
        job_cancel(job=job, user=manager)
    assert not path.exists()
    # The message still arrives: the job stays cancelled and nothing looks for the file.
    assert job_execute(kind="import", job_id=job.pk, worker="w").state == ImportJobState.CANCELLED


class _WorkerDied(BaseException):
    """What the import sees of a worker killed mid-import: nothing it could catch."""


def test_a_lost_workers_upload_stays_for_the_retry(
    project, manager, monkeypatch, job_messages, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from annotation import jobs as import_kind

    job, path = upload(project, manager)
    real = import_kind.import_file

    def die(**kwargs: Any) -> None:
        raise _WorkerDied

    monkeypatch.setattr(import_kind, "import_file", die)
    with pytest.raises(_WorkerDied):
        job_execute(kind="import", job_id=job.pk, worker="w1")
    assert path.is_file()
    monkeypatch.setattr(import_kind, "import_file", real)
    later = timezone.now() + timedelta(seconds=get_kind("import").stale_after_seconds() + 1)
    with django_capture_on_commit_callbacks(execute=True):
        assert [(r.job_id, r.outcome) for r in jobs_reap(now=later, kinds=[get_kind("import")])] == [
            (job.pk, "requeued")
        ]
    assert path.is_file()
    with django_capture_on_commit_callbacks(execute=True):
        assert job_execute(kind="import", job_id=job.pk, worker="w2").state == ImportJobState.SUCCEEDED
    assert not path.exists()
