"""The agreement report of a judgement file, keeping nothing.

``manage.py agreement_report --file`` calls :func:`agreement_report_from_file`: the file is
imported into a temporary project inside a transaction that is rolled back, and the
report is the one :func:`annotation.reports.report.agreement_report` computes for a
project, with a ``source`` section about the import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.db import transaction

from annotation.importers import import_file
from annotation.models import MAX_RESPONSES_PER_TASK, Project, ProjectKind
from annotation.reports.report import agreement_report

# Formats whose items are always one pair; the others may hold K-way rankings.
PAIRWISE_FORMATS = frozenset({"pandalm", "mt-bench", "hh-rlhf"})


class _Discard(Exception):
    """Raised to leave the temporary project's transaction; never escapes."""


def agreement_report_from_file(
    *,
    path: Path | str,
    format: str,
    options: dict[str, Any] | None = None,
    kind: str | None = None,
    **report_options: Any,
) -> dict[str, Any]:
    """The agreement report of a judgement file (``pandalm``, ``mt-bench``, ``jsonl`` ...), keeping nothing.

    The file is imported with :func:`annotation.importers.import_file` into a temporary
    project created inside ``transaction.atomic()``; the report is computed from those
    rows, exactly as for a real project, and the transaction is then rolled back: no
    project, task, judgement or annotator account remains. (On PostgreSQL the id
    sequences are not rolled back, so some ids are used up.) The ids in the report
    (``project.id`` is null; task, response and user ids) name rows that no longer exist:
    use ``contested.items[].external_id`` (the prompt's id in the file) and the usernames.

    The temporary project allows ties, and is pairwise for the formats that only hold
    pairs (``pandalm``, ``mt-bench``, ``hh-rlhf``) and a ranking project taking up to
    ``MAX_RESPONSES_PER_TASK`` responses otherwise; ``kind`` overrides that. A refused
    import raises :class:`annotation.importers.ImportFailed`. Path options (``mt-bench``'s
    ``questions``, ``answers``) are read from this machine's file system, which is why this
    is offered on the command line and not over the API.
    """
    path = Path(path)
    if kind is None:
        kind = ProjectKind.PAIRWISE if format in PAIRWISE_FORMATS else ProjectKind.RANKING
    if kind not in ProjectKind.values:
        raise ValueError(f"kind must be one of {', '.join(ProjectKind.values)}")
    result: dict[str, Any] = {}
    try:
        with transaction.atomic():
            project = Project.objects.create(
                name=f"agreement report: {path.name}"[:200],
                kind=kind,
                responses_per_task=2 if kind == ProjectKind.PAIRWISE else MAX_RESPONSES_PER_TASK,
                annotations_per_task=1,
                allow_ties=True,
            )
            # In the file's order (nobody annotates this project): pairs are then read the
            # way the file states them, and the figures depend on the file alone.
            summary = import_file(project=project, path=path, format=format, options=options, shuffle=False)
            result = agreement_report(project=project, **report_options)
            # Leaving the block by an exception rolls back everything the import wrote.
            raise _Discard
    except _Discard:
        pass
    result["project"] = {
        "id": None,
        "name": path.name,
        "kind": kind,
        "allow_ties": True,
        "temporary": True,
    }
    result["source"] = {
        "file": path.name,
        "format": format,
        "options": dict(options or {}),
        "imported": {
            "prompts": summary.prompts,
            "tasks": summary.tasks,
            "judgements": summary.judgements,
            "skipped": len(summary.skipped),
        },
        "skipped": summary.skipped[:20],
        "notes": list(summary.notes),
        "persisted": False,
    }
    return result
