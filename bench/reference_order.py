"""Do response ids or positions give the reference answer away? Figures on the real data.

Imports HH-RLHF harmless-base test (2,312 pairs, the chosen reply listed first) and the
OpenAssistant sample (211 fully ranked groups of sibling replies) into a scratch SQLite
database, then prints:

- the share of HH tasks whose chosen reply has the lower response id, and the share whose
  chosen reply is at task position 0 (an annotator who sees ids would pick the lower one);
- the share of OpenAssistant consensus rankings that are ascending response ids, and
  ascending task positions.

Stored in file order, all four are 1.0. With the import's shuffle they should be about 0.5
and 0.24 (a ranking of K replies is in id order with chance 1/K!). It prints and asserts
nothing. Run it from a checkout's root::

    .venv/bin/python bench/reference_order.py [--data-dir ../shared/data] [--shuffle-seed S]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path.cwd()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--shuffle-seed", default=None, help="import option shuffle_seed (default: a random one)")
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="arpad-reference-order-"))
    try:
        return measure(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def measure(args: argparse.Namespace, scratch: Path) -> int:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="arpad.settings",
        DJANGO_DEBUG="1",
        DATABASE_URL=f"sqlite:///{scratch / 'db.sqlite3'}",
        ARPAD_VAR_DIR=str(scratch),
        ARTIFACT_ROOT=str(scratch / "artifacts"),
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    from annotation.importers import import_file
    from annotation.models import Judgement, Project, ProjectKind, Response, Task, TaskResponse

    call_command("migrate", verbosity=0)
    options = {} if args.shuffle_seed is None else {"shuffle_seed": args.shuffle_seed}

    hh = Project.objects.create(name="hh", kind=ProjectKind.PAIRWISE, responses_per_task=2)
    summary = import_file(
        project=hh, path=args.data_dir / "hh-rlhf" / "harmless-base-test.jsonl.gz", format="hh-rlhf", options=options
    )
    lower: dict[int, tuple[int, str]] = {}
    for prompt_id, pk, label in Response.objects.filter(prompt__project=hh).values_list(
        "prompt_id", "pk", "metadata__hh_label"
    ):
        if prompt_id not in lower or pk < lower[prompt_id][0]:
            lower[prompt_id] = (pk, label)
    tasks = len(lower)
    chosen_lower = sum(label == "chosen" for _, label in lower.values())
    chosen_first = TaskResponse.objects.filter(
        task__project=hh, position=0, response__metadata__hh_label="chosen"
    ).count()

    oasst = Project.objects.create(name="oasst", kind=ProjectKind.RANKING, responses_per_task=9)
    import_file(
        project=oasst,
        path=args.data_dir / "oasst_en100" / "en_100_tree.jsonl",
        format="oasst",
        options={"import_consensus": True, **options},
    )
    positions = {task.pk: task.response_ids() for task in Task.objects.filter(project=oasst)}
    rankings = [
        (judgement.task_id, [tier[0] for tier in judgement.tiers])
        for judgement in Judgement.objects.filter(task__project=oasst)
    ]
    id_order = sum(ranking == sorted(ranking) for _, ranking in rankings)
    position_order = sum(ranking == positions[task_id] for task_id, ranking in rankings)

    seed = getattr(summary, "shuffle_seed", "") or "none (file order)"
    print(f"shuffle seed: {seed}")
    print(f"HH-RLHF, {tasks} tasks: chosen has the lower id in {chosen_lower} ({chosen_lower / tasks:.3f})")
    print(f"HH-RLHF, {tasks} tasks: chosen at position 0 in {chosen_first} ({chosen_first / tasks:.3f})")
    n = len(rankings)
    print(f"OpenAssistant, {n} consensus rankings: ascending ids in {id_order} ({id_order / n:.3f})")
    print(f"OpenAssistant, {n} consensus rankings: ascending positions in {position_order} ({position_order / n:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
