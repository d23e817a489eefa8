"""Demo projects built from real public preference data.

The data is never part of the repository. It is read from ``ARPAD_DATA_DIR``, else from
``../shared/data`` beside the checkout, else (on a machine with internet) downloaded
once from its public source (the Hugging Face Hub for OpenAssistant, the PandaLM
repository for PandaLM) into ``var/demo-data``.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from annotation.importers import import_file
from annotation.models import Membership, Project, ProjectKind, Role

PANDALM_NAME = "PandaLM human test set (pairwise)"
OASST_NAME = "OpenAssistant English trees (K-way ranking)"

GUIDELINES_PAIRWISE = """\
Compare the two responses to the instruction.

* Pick the response that follows the instruction more faithfully and is more accurate.
* Prefer concise, correct answers over long ones that pad or wander.
* Use **tie** only when neither is better.

Keys: `1` / `←` left, `2` / `→` right, `3` / `↓` tie, `Enter` submit.
"""

GUIDELINES_RANKING = """\
Rank the assistant replies from best to worst.

* Helpful, correct and safe beats fluent but wrong.
* Put replies of equal quality in the same place when ties are allowed.
"""

# Where the demo files live upstream, for a machine with internet and no local copy:
# (url, local file name under var/demo-data, import options that keep the demo small).
DOWNLOADS = {
    "pandalm": (
        "https://raw.githubusercontent.com/WeOpenML/PandaLM/main/data/testset-v1.json",
        "pandalm-testset-v1.json",
        {},
    ),
    "oasst": (
        "https://huggingface.co/datasets/OpenAssistant/oasst1/resolve/main/2023-04-12_oasst_ready.trees.jsonl.gz",
        "oasst1-trees.jsonl.gz",
        {"lang": "en", "max_trees": 100},
    ),
}


class DemoDataMissing(Exception):
    pass


def find_data_dir() -> Path | None:
    candidates = []
    if os.environ.get("ARPAD_DATA_DIR"):
        candidates.append(Path(os.environ["ARPAD_DATA_DIR"]))
    candidates.append(Path(settings.BASE_DIR).parent / "shared" / "data")
    for candidate in candidates:
        if (candidate / "pandalm").is_dir() or (candidate / "oasst_en100").is_dir():
            return candidate
    return None


def _download(key: str) -> tuple[Path, dict]:
    """Fetch a demo file from its public source once and cache it under var/demo-data."""
    url, name, options = DOWNLOADS[key]
    target = Path(settings.VAR_DIR) / "demo-data" / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".part")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:  # noqa: S310 - fixed https URL
                shutil.copyfileobj(response, out)
        except OSError as exc:
            raise DemoDataMissing(
                f"demo data not found locally and {url} could not be fetched ({exc}); "
                "set ARPAD_DATA_DIR to a folder holding pandalm/ and oasst_en100/"
            ) from None
        partial.rename(target)
    return target, options


@dataclass
class DemoResult:
    project: Project
    created: bool
    summary: dict


def _ensure_project(name: str, **fields: object) -> tuple[Project, bool]:
    project = Project.objects.filter(name=name).first()
    if project is not None:
        return project, False
    return Project.objects.create(name=name, **fields), True


def _ensure_user(username: str, password: str, *, staff: bool = False) -> object:
    User = get_user_model()  # noqa: N806
    user, created = User.objects.get_or_create(username=username, defaults={"is_staff": staff, "is_superuser": staff})
    if created:
        user.set_password(password)
        user.save()
    return user


def load_demo(*, password: str, stdout=None) -> list[DemoResult]:
    """Create (once) the demo users and projects; running it again changes nothing."""
    data_dir = find_data_dir()
    admin = _ensure_user("admin", password, staff=True)
    annotator = _ensure_user("annotator", password)
    results = []
    specs = [
        (
            PANDALM_NAME,
            dict(
                kind=ProjectKind.PAIRWISE,
                responses_per_task=2,
                # Three imported judgements per task plus one slot for the demo annotator.
                annotations_per_task=4,
                allow_ties=True,
                guidelines=GUIDELINES_PAIRWISE,
            ),
            "pandalm",
            ("pandalm/testset-v1.json",),
            # PandaLM compares up to ten model pairs on one instruction, listed together: spread
            # them, so the queue does not serve the same prompt several times in a row.
            {"spread_same_prompts": True},
        ),
        (
            OASST_NAME,
            dict(
                kind=ProjectKind.RANKING,
                responses_per_task=9,
                annotations_per_task=3,
                allow_ties=True,
                guidelines=GUIDELINES_RANKING,
            ),
            "oasst",
            ("oasst_en100/en_100_tree.jsonl",),
            {"import_consensus": True},
        ),
    ]
    for name, fields, fmt, relative_paths, options in specs:
        if Project.objects.filter(name=name).exists():
            results.append(DemoResult(Project.objects.get(name=name), False, {}))
            continue
        path = None
        if data_dir is not None:
            path = next((data_dir / rel for rel in relative_paths if (data_dir / rel).exists()), None)
        if path is None:
            path, download_options = _download(fmt)
            options = {**options, **download_options}
        with transaction.atomic():
            project, _ = _ensure_project(name, created_by=admin, **fields)
            Membership.objects.get_or_create(project=project, user=admin, defaults={"role": Role.MANAGER})
            Membership.objects.get_or_create(project=project, user=annotator, defaults={"role": Role.ANNOTATOR})
            summary = import_file(project=project, path=path, format=fmt, options=options, display_name=path.name)
        results.append(DemoResult(project, True, summary.as_dict()))
        if stdout is not None:
            stdout.write(
                f"  {name}: {summary.tasks} tasks, {summary.judgements} judgements from {path} "
                f"(responses shuffled with seed {summary.shuffle_seed})\n"
            )
    for result in results:
        _register_demo_policy(result.project, stdout)
    from rlloop.demo_loop import load_loop_project

    loop, created = load_loop_project(data_dir=data_dir, admin=admin, annotator=annotator, stdout=stdout)
    if loop is not None:
        results.append(DemoResult(loop, created, {}))
    return results


def _register_demo_policy(project: Project, stdout=None) -> None:
    """The converted demo policy as each demo project's reference policy, once (PPO and SFT start from it)."""
    from rlloop import bases
    from rlloop.demo_policy import DEMO_POLICY_NAME
    from rlloop.models import PolicyVersion
    from rlloop.services import policy_register

    if DEMO_POLICY_NAME not in bases.registry.all():
        return
    if PolicyVersion.objects.filter(project=project, name=DEMO_POLICY_NAME).exists():
        return
    version = policy_register(
        project=project, name=DEMO_POLICY_NAME, is_reference=True, generation={"max_new_tokens": 128}
    )
    if stdout is not None:
        stdout.write(f"  {project.name}: policy {version.display_name} registered as the reference\n")
