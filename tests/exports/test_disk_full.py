"""An export that runs out of disk fails with the reason and publishes nothing (a real, tiny tmpfs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from exports.models import ExportState
from exports.services import export_snapshot_create, export_snapshot_run
from tests.exports.helpers import add_task, judge, ranking_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 96 KiB tmpfs as ARTIFACT_ROOT; skips where mounting is not allowed (not root)."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mountpoint)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_disk_full_fails_the_export_with_the_reason_and_leaves_nothing(small_disk, settings):
    settings.ARTIFACT_ROOT = small_disk
    project = ranking_project(k=4)
    long_text = "many words " * 400  # each response ~4 KB: the files outgrow 96 KiB
    for t in range(40):
        task, ids = add_task(project)
        task.responses.update(text=long_text + str(t))
        for n in range(3):
            judge(task, f"disk-{n}", [[r] for r in (ids if (t + n) % 2 else ids[::-1])])
    snapshot = export_snapshot_create(project=project, params={}, user=None)
    after = export_snapshot_run(snapshot_id=snapshot.pk)
    assert after.state == ExportState.FAILED, (after.state, after.error)
    assert "No space left on device" in after.error or "Errno 28" in after.error, after.error
    assert after.path == "" and after.content_hash == ""
    exports = small_disk / "exports"
    assert not exports.exists() or list(exports.iterdir()) == []  # no published and no half-written directory
