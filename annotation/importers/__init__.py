"""Importing prompts, responses, tasks and existing judgements from files.

::

    from annotation.importers import import_file, ImportFailed, ImportSummary, FORMATS

    summary = import_file(project=project, path=path, format="hh-rlhf", options={"divergent": "skip"})

``FORMATS`` maps each format name to a one-line description. Each format's module
documents its records and options: ``generic`` ("jsonl"), ``hh_rlhf``, ``oasst``,
``pandalm`` and ``mt_bench``.

Every import is all or nothing. The whole file is parsed and checked first, collecting
up to ``MAX_ERRORS`` problems, each naming the file, line, field and what is wrong; only
a file without problems is written, in bulk, inside one ``transaction.atomic()``. A
refused import raises :class:`ImportFailed` and leaves the database as it was. Records
left out on purpose (by an option such as ``divergent=skip``) are listed in
``ImportSummary.skipped``; nothing is dropped silently.

Files may be gzip-compressed (recognised by content, not name) and are limited by
``ARPAD_IMPORT_MAX_BYTES`` (decompressed) and ``ARPAD_IMPORT_MAX_FIELD_CHARS`` (any one
text field); see ``reader.py``.

Every format also takes the options of ``base.COMMON_OPTIONS``: ``shuffle_seed`` and
``judgements_by_members``. The writer shuffles the responses of every prompt before
storing them, so that neither response ids nor task positions follow the file's order
(HH-RLHF lists the chosen reply first, OpenAssistant siblings come in rank order); the
seed is kept in ``ImportSummary.shuffle_seed`` and in each prompt's metadata, and the
same file with the same seed gives the same ids and order. Judgements are written only
in the name of import accounts, or of members with ``judgements_by_members``: the rule
is in ``writer.py``.

Options of type path (``mt-bench``'s ``questions`` and ``answers``) are read from the
server's file system: callers that take options from users over the web must not pass
them through unchecked.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from django.db import DatabaseError, IntegrityError, transaction

from annotation.importers import generic, hh_rlhf, mt_bench, oasst, pandalm, writer
from annotation.importers.base import (
    COMMON_OPTIONS,
    MAX_ERRORS,
    ErrorCollector,
    ImportContext,
    ImportErrorDetail,
    ImportFailed,
    ImportSummary,
    Option,
    StopImport,
    TooManyErrors,
    resolve_options,
)
from annotation.models import Project

__all__ = ["FORMATS", "MAX_ERRORS", "ImportErrorDetail", "ImportFailed", "ImportSummary", "import_file"]

_MODULES: dict[str, ModuleType] = {
    "jsonl": generic,
    "hh-rlhf": hh_rlhf,
    "oasst": oasst,
    "pandalm": pandalm,
    "mt-bench": mt_bench,
}

FORMATS: dict[str, str] = {name: module.DESCRIPTION for name, module in _MODULES.items()}

# Share of the progress bar for reading and checking; the rest is writing.
_PARSE_SHARE = 0.6


def format_options(name: str) -> list[dict[str, Any]]:
    """The options a format takes, for help texts: name, kind, default, choices, help."""
    return [
        {
            "name": option.name,
            "kind": option.kind,
            "default": option.default,
            "choices": list(option.choices),
            "help": option.help,
        }
        for option in _options(_MODULES[name])
    ]


def _options(module: ModuleType) -> list[Option]:
    return [*module.OPTIONS, *COMMON_OPTIONS]


def import_file(
    *,
    project: Project,
    path: Path | str,
    format: str,
    options: dict[str, Any] | None = None,
    progress: Callable[[float], None] | None = None,
    display_name: str | None = None,
    shuffle: bool = True,
) -> ImportSummary:
    """Import ``path`` into ``project`` as ``format``; all or nothing.

    Returns what was created; raises :class:`ImportFailed` listing every problem found.
    ``progress`` is called now and then with the fraction done (0..1). ``display_name``
    is the file name errors show (an upload is stored under another name).
    ``shuffle=False`` stores responses in the file's order, whose ids then give the
    reference away: only for a project nobody annotates (the agreement report on a file
    imports into a temporary project, so that its figures are the file's own).
    """
    path = Path(path)
    name = display_name or path.name
    errors = ErrorCollector(name)
    summary = ImportSummary()
    report = progress or (lambda fraction: None)
    try:
        module = _MODULES.get(format)
        if module is None:
            errors.fatal(None, "format", f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
        resolved = resolve_options(_options(module), options, errors=errors, base_dir=path.parent)
        if errors:
            raise StopImport
        if not shuffle:
            resolved["shuffle_seed"] = None
        elif resolved["shuffle_seed"] is None:
            # Random, not derived from the file: a seed that public data and public code
            # could recompute would let anyone undo the shuffle.
            resolved["shuffle_seed"] = secrets.token_hex(8)
        summary.shuffle_seed = resolved["shuffle_seed"] or ""
        if not path.is_file():
            errors.fatal(None, "file", "not found")
        report(0.0)
        ctx = ImportContext(
            project=project,
            path=path,
            display_name=name,
            format=format,
            options=resolved,
            errors=errors,
            summary=summary,
            progress=lambda fraction: report(_PARSE_SHARE * fraction),
        )
        module.parse(ctx)
        if not ctx.records and not errors:
            errors.add(1, "file", "holds no records (the file is empty)")
        if errors:
            raise StopImport
        ctx.progress = lambda fraction: report(_PARSE_SHARE + (1 - _PARSE_SHARE) * fraction)
        _write(ctx)
    except TooManyErrors:
        raise ImportFailed(errors.errors, truncated=True) from None
    except StopImport:
        raise ImportFailed(errors.errors) from None
    report(1.0)
    return summary


def _write(ctx: ImportContext) -> None:
    """The write phase, in one transaction: any error rolls back every row."""
    try:
        with transaction.atomic():
            writer.check_existing(ctx)
            if ctx.errors:
                raise StopImport
            users = writer.resolve_annotators(ctx)
            if ctx.errors:
                raise StopImport
            writer.write(ctx, users=users)
    except IntegrityError as exc:
        # A concurrent import of the same ids, or a bug: either way nothing was written.
        ctx.errors.add(None, None, f"the database refused the import, nothing was written ({exc})")
        raise StopImport from None
    except DatabaseError as exc:
        ctx.errors.add(None, None, f"database error, nothing was written ({exc})")
        raise StopImport from None
