"""The demo's loop project: HH-RLHF and OpenAssistant prompts, answered by the demo policy on the demo's gpu worker.

``load_demo`` calls :func:`load_loop_project` once the demo policy is converted. It
creates a pairwise project holding prompts only: single-turn requests from the HH-RLHF
harmless-base test split and OpenAssistant root prompts, read from the same data folder
as the other demo projects. The demo policy becomes its reference, and a sampling job is
queued: when the demo starts, its ``gpu`` worker samples two answers per prompt on the CPU
and the comparisons arrive in the annotators' queue batch by batch (progress on the Loop
page). After labelling them, "Run a cycle" trains a reward model and a PPO round and
samples the new policy against the old one.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

from django.db import transaction

from annotation.models import Membership, Project, ProjectKind, Prompt, Role

LOOP_NAME = "Loop: SmolLM2 answers HH-RLHF and OpenAssistant prompts (pairwise)"
GUIDELINES = """\
Two answers of the project's current policy (a small chat model) to the same request.

* Choose the answer that is more helpful, honest and harmless.
* A polite refusal of a harmful request beats harmful help.
* Use tie when neither is better; skip only when you cannot judge.
"""
PROMPTS_PER_SOURCE = 16
SAMPLING = {"temperature": 0.9, "top_p": 0.95, "max_new_tokens": 96, "seed": 0}


def hh_prompts(path: Path, count: int, rng: random.Random) -> list[dict[str, Any]]:
    """Single-turn requests of HH-RLHF: the human turn before the first assistant turn, short ones."""
    found = []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            dialogue = json.loads(line)["chosen"]
            turns = dialogue.split("\n\nHuman: ")
            if len(turns) != 2:  # more than one human turn: not a single request
                continue
            request = turns[1].split("\n\nAssistant:")[0].strip()
            if 20 <= len(request) <= 300:
                found.append({"id": f"hh-harmless-test-{number}", "text": request})
    return rng.sample(found, min(count, len(found)))


def oasst_prompts(path: Path, count: int, rng: random.Random) -> list[dict[str, Any]]:
    found = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            tree = json.loads(line)
            text = (tree.get("prompt") or {}).get("text", "").strip()
            if 20 <= len(text) <= 400 and (tree.get("prompt") or {}).get("lang", "en") == "en":
                found.append({"id": f"oasst-{tree['message_tree_id']}", "text": text})
    return rng.sample(found, min(count, len(found)))


def load_loop_project(
    *, data_dir: Path | None, admin: Any, annotator: Any, stdout: Any = None
) -> tuple[Project | None, bool]:
    """Create the loop project once and queue its first sampling job: (project, created); None when data or policy is missing."""
    from rlloop import bases
    from rlloop.demo_policy import DEMO_POLICY_NAME
    from rlloop.models import PolicyVersion
    from rlloop.sampling import sampling_job_create
    from rlloop.services import policy_register

    if Project.objects.filter(name=LOOP_NAME).exists():
        return Project.objects.get(name=LOOP_NAME), False
    hh = data_dir / "hh-rlhf" / "harmless-base-test.jsonl.gz" if data_dir else None
    oasst = data_dir / "oasst_en100" / "en_100_tree.jsonl" if data_dir else None
    if hh is None or not hh.is_file() or not oasst.is_file():
        if stdout is not None:
            stdout.write("  loop project skipped: needs hh-rlhf/ and oasst_en100/ in the data folder\n")
        return None, False
    if DEMO_POLICY_NAME not in bases.registry.all():
        if stdout is not None:
            stdout.write("  loop project skipped: the demo policy is not converted (manage.py fetch_demo_policy)\n")
        return None, False
    rng = random.Random(0)
    prompts = hh_prompts(hh, PROMPTS_PER_SOURCE, rng) + oasst_prompts(oasst, PROMPTS_PER_SOURCE, rng)
    with transaction.atomic():
        project = Project.objects.create(
            name=LOOP_NAME,
            kind=ProjectKind.PAIRWISE,
            responses_per_task=2,
            annotations_per_task=1,
            allow_ties=True,
            guidelines=GUIDELINES,
            created_by=admin,
        )
        Membership.objects.create(project=project, user=admin, role=Role.MANAGER)
        Membership.objects.create(project=project, user=annotator, role=Role.ANNOTATOR)
        Prompt.objects.bulk_create(
            Prompt(project=project, external_id=p["id"], messages=[{"role": "user", "content": p["text"]}])
            for p in prompts
        )
        policy = policy_register(
            project=project, name=DEMO_POLICY_NAME, is_reference=True, generation={"max_new_tokens": 96}
        )
        job = sampling_job_create(
            project=project,
            policies=[PolicyVersion.objects.get(pk=policy.pk)],
            responses_per_prompt=2,
            prompts="project",
            max_prompts=len(prompts),
            sampling=SAMPLING,
            priority=10,
            user=admin,
        )
    if stdout is not None:
        stdout.write(
            f"  {LOOP_NAME}: {len(prompts)} prompts; sampling job {job.pk} queued: the gpu worker answers them"
            " with the demo policy once the demo starts (progress on the project's Loop page)\n"
        )
    return project, True
