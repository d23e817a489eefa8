"""Shared pieces of the importers: errors, the summary, options, and the parsed records.

An import runs in two phases. The *parse* phase reads the whole file and turns every
record into :class:`PromptSpec` objects (a prompt, its responses, and the tasks and
judgements built on them), collecting every problem as an :class:`ImportErrorDetail`
instead of stopping at the first. Nothing touches the database until the parse phase
found no error; the *write* phase (``writer.py``) then stores everything in one
transaction. So a bad file never half-applies.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from annotation import services
from annotation.models import MAX_RESPONSES_PER_TASK, Project

logger = logging.getLogger(__name__)

# Collecting errors stops here: past a hundred, the file is wrong in some systematic way
# and a longer list helps nobody.
MAX_ERRORS = 100

# Matches Django's UnicodeUsernameValidator and the username column's length, so that an
# account we create is one the admin could have created.
USERNAME_RE = re.compile(r"^[\w.@+-]+\Z")
USERNAME_MAX = 150
EXTERNAL_ID_MAX = 255
SOURCE_MAX = 200
# PostgreSQL's text and jsonb cannot hold U+0000: refused on every database, so that a file
# imports the same way on SQLite and on PostgreSQL.
NUL = "\x00"
NUL_MESSAGE = "contains a NUL character (\\u0000), which cannot be stored"
PRIORITY_RANGE = (-(2**31), 2**31 - 1)

# What to do with an empty response text, per format (option ``empty_responses``).
EMPTY_POLICIES = ("keep", "skip", "error")


# --- errors and summary --------------------------------------------------------------------


@dataclass(frozen=True)
class ImportErrorDetail:
    """One problem in an import file. ``line`` is 1-based; None for file-level problems."""

    file: str
    line: int | None
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ImportFailed(Exception):
    """The file was refused; nothing was written. ``errors`` lists every problem found."""

    def __init__(self, errors: list[ImportErrorDetail], *, truncated: bool = False) -> None:
        self.errors = list(errors)
        self.truncated = truncated
        super().__init__(self._text())

    def _text(self) -> str:
        count = len(self.errors)
        head = f"import failed with {count} error{'s' if count != 1 else ''}; nothing was written"
        if self.truncated:
            head += f" (stopped after {MAX_ERRORS} errors)"
        return "\n".join([head, *(str(error) for error in self.errors)])


@dataclass
class ImportSummary:
    prompts: int = 0
    responses: int = 0
    tasks: int = 0
    judgements: int = 0
    annotators_created: int = 0
    # The seed the responses were shuffled with (option shuffle_seed); the same file and
    # seed give the same order again.
    shuffle_seed: str = ""
    # Records that were deliberately left out, each {"line": int | None, "reason": str}.
    skipped: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class TooManyErrors(Exception):
    """Raised when the error list is full; caught by ``import_file``."""


class StopImport(Exception):
    """Raised after a fatal error (unreadable file, size limit): reading cannot go on."""


class RecordError(Exception):
    """The first problem in one record; the parser records it and goes on with the next."""

    def __init__(self, field: str | None, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.line = line


class ErrorCollector:
    def __init__(self, file: str) -> None:
        self.file = file
        self.errors: list[ImportErrorDetail] = []

    def add(self, line: int | None, field: str | None, message: str, *, file: str | None = None) -> None:
        self.errors.append(ImportErrorDetail(file=file or self.file, line=line, field=field, message=message))
        if len(self.errors) >= MAX_ERRORS:
            raise TooManyErrors

    def fatal(self, line: int | None, field: str | None, message: str, *, file: str | None = None) -> None:
        """Record a problem after which the rest of the file cannot be read."""
        self.add(line, field, message, file=file)
        raise StopImport

    def __bool__(self) -> bool:
        return bool(self.errors)


# --- options --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """One format option. ``kind`` is "bool", "int" (at least 1), "str", "choice", "path",
    "username", "prefix" (of usernames) or "seed" (a string or an integer)."""

    name: str
    kind: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()


SEED_MAX = 100

# Options every format takes, after its own (see ``writer.py`` for what they do).
COMMON_OPTIONS = [
    Option(
        "spread_same_prompts",
        "bool",
        False,
        "store the tasks so that two with the same prompt text are never next to each other in the queue "
        "where that can be done (data sets that compare several response pairs on one instruction)",
    ),
    Option(
        "shuffle_seed",
        "seed",
        None,
        "seed of the shuffle of each task's responses (default: a fresh random seed, kept in the summary); "
        "the same file and seed give the same order",
    ),
    Option(
        "judgements_by_members",
        "bool",
        False,
        "write judgements that name a member of this project in that member's own account "
        "(only with their consent); otherwise such a name is refused",
    ),
]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def resolve_options(
    declared: list[Option], given: dict[str, Any] | None, *, errors: ErrorCollector, base_dir: Path
) -> dict[str, Any]:
    """Check the caller's options against the format's and fill in defaults.

    Values may be strings (from the command line or a form), so booleans accept
    true/false/yes/no/1/0 and paths are resolved against the input file's folder.
    """
    by_name = {option.name: option for option in declared}
    resolved = {option.name: option.default for option in declared}
    if given is not None and not isinstance(given, dict):
        errors.add(None, "options", f"must be an object of option names and values, not {json_type(given)}")
        return resolved
    for name, value in (given or {}).items():
        option = by_name.get(name)
        if option is None:
            known = ", ".join(sorted(by_name)) or "none"
            errors.add(None, f"options.{name}", f"unknown option for this format (known: {known})")
            continue
        if option.kind == "bool":
            if isinstance(value, bool):
                resolved[name] = value
            elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
                resolved[name] = value.strip().lower() in _TRUE
            else:
                errors.add(None, f"options.{name}", f"must be true or false, not {value!r}")
        elif option.kind == "int":
            try:
                number = int(value) if not isinstance(value, bool) else None
            except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
                number = None
            if number is None or number < 1 or (isinstance(value, float) and not value.is_integer()):
                errors.add(None, f"options.{name}", f"must be a whole number of at least 1, not {value!r}")
            else:
                resolved[name] = number
        elif option.kind == "choice":
            if value not in option.choices:
                errors.add(None, f"options.{name}", f"must be one of {', '.join(option.choices)}, not {value!r}")
            else:
                resolved[name] = value
        elif option.kind in ("username", "prefix"):
            # Checked here, once, rather than on every record that uses it.
            empty_ok = option.kind == "prefix"
            if not isinstance(value, str) or not (value or empty_ok):
                errors.add(None, f"options.{name}", f"must be a string, not {value!r}")
            elif len(value) > USERNAME_MAX or (value and not USERNAME_RE.match(value)):
                errors.add(
                    None,
                    f"options.{name}",
                    f"{value!r} cannot be (part of) a username: use letters, digits and @ . + - _",
                )
            else:
                resolved[name] = value
        elif option.kind == "seed":
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or not value or len(value) > SEED_MAX or not value.isprintable():
                errors.add(
                    None,
                    f"options.{name}",
                    f"must be an integer or a string of 1 to {SEED_MAX} characters, not {value!r}",
                )
            else:
                resolved[name] = value
        elif option.kind == "path":
            if not isinstance(value, str | Path) or not str(value):
                errors.add(None, f"options.{name}", "must be a path")
            else:
                resolved[name] = base_dir / Path(value)
        else:
            if not isinstance(value, str):
                errors.add(None, f"options.{name}", f"must be a string, not {value!r}")
            else:
                resolved[name] = value
    return resolved


# --- parsed records -------------------------------------------------------------------------


@dataclass
class ResponseSpec:
    text: str
    source: str = ""
    external_id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class JudgementSpec:
    annotator: str  # username; the account is found or created in the write phase
    tiers: list[list[int]]  # positions into the task's responses, best first
    field: str  # where it came from, for error messages
    line: int | None = None  # when it is not the line of its task (MT-Bench)
    rationale: str = ""


@dataclass
class TaskSpec:
    responses: list[int]  # positions into the prompt's responses, in task order
    line: int | None
    source: str
    priority: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    gold_tiers: list[list[int]] | None = None  # positions into ``responses``
    judgements: list[JudgementSpec] = field(default_factory=list)
    field: str = "responses"  # the field that holds the responses, for K errors


@dataclass
class PromptSpec:
    external_id: str
    messages: list[dict[str, str]]
    line: int | None
    responses: list[ResponseSpec] = field(default_factory=list)
    tasks: list[TaskSpec] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    id_field: str = "id"  # the field the external id came from, for duplicate errors


# --- the context every parser writes into ----------------------------------------------------


@dataclass
class ImportContext:
    project: Project
    path: Path
    display_name: str
    format: str
    options: dict[str, Any]
    errors: ErrorCollector
    summary: ImportSummary
    progress: Callable[[float], None]
    max_field_chars: int = field(default_factory=lambda: settings.ARPAD_IMPORT_MAX_FIELD_CHARS)
    max_bytes: int = field(default_factory=lambda: settings.ARPAD_IMPORT_MAX_BYTES)
    prompts: list[PromptSpec] = field(default_factory=list)
    records: int = 0  # records read, including skipped ones; zero means an empty file
    _ids: dict[str, int | None] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """Task.source for file-named imports (generic JSONL): the user's file name."""
        return self.display_name[:SOURCE_MAX]

    def skip(self, line: int | None, reason: str) -> None:
        self.summary.skipped.append({"line": line, "reason": reason})

    def provenance(self, line: int | None, **extra: Any) -> dict[str, Any]:
        where = {"format": self.format, "file": self.display_name, "line": line, **extra}
        return {"import": {**where, "shuffle_seed": self.options.get("shuffle_seed")}}

    @contextmanager
    def record(self, line: int | None) -> Iterator[None]:
        """Turn a :class:`RecordError` into an error on ``line`` and go on with the next record.

        Anything else that goes wrong while reading one record is a bug in the parser, but
        the user still gets a line number instead of a traceback.
        """
        try:
            yield
        except RecordError as exc:
            self.errors.add(exc.line if exc.line is not None else line, exc.field, exc.message)
        except (TooManyErrors, StopImport):
            raise
        except Exception as exc:
            logger.exception("importer crashed on %s line %s", self.display_name, line)
            self.errors.add(line, None, f"could not read this record ({type(exc).__name__}: {exc})")

    # -- checks shared by every format ---------------------------------------------------------

    def text(self, value: Any, field: str, *, allow_empty: bool = False) -> str:
        """A text field: a string within the size limit, not blank unless allowed."""
        if not isinstance(value, str):
            raise RecordError(field, f"must be a string, not {json_type(value)}")
        if len(value) > self.max_field_chars:
            raise RecordError(
                field,
                f"is {len(value):,} characters long; the limit is {self.max_field_chars:,} (ARPAD_IMPORT_MAX_FIELD_CHARS)",
            )
        if NUL in value:
            raise RecordError(field, NUL_MESSAGE)
        if not allow_empty and not value.strip():
            raise RecordError(field, "is empty")
        return value

    def external_id(self, value: Any, field: str) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise RecordError(field, "must be a non-empty string")
        if len(value) > EXTERNAL_ID_MAX:
            raise RecordError(field, f"is longer than {EXTERNAL_ID_MAX} characters")
        return value

    def username(self, name: Any, field: str) -> str:
        if not isinstance(name, str) or not name:
            raise RecordError(field, "must be a non-empty annotator name")
        if len(name) > USERNAME_MAX or not USERNAME_RE.match(name):
            raise RecordError(
                field,
                f"{name!r} cannot be a username: use at most {USERNAME_MAX} letters, digits and @ . + - _",
            )
        return name

    def tiers(self, value: Any, *, k: int, field: str) -> list[list[int]]:
        """A ranking as tiers of response positions 0..k-1, checked like a submitted one."""
        try:
            return services.validate_tiers(value, response_ids=list(range(k)), allow_ties=self.project.allow_ties)
        except services.InvalidRanking as exc:
            raise RecordError(field, f"{exc.message} (responses are numbered 0..{k - 1} in file order)") from None

    def check_k(self, k: int, *, field: str, what: str = "this item") -> None:
        project = self.project
        if project.is_pairwise and k != 2:
            raise RecordError(field, f"{what} has {k} responses; a pairwise project needs exactly 2")
        limit = min(project.responses_per_task, MAX_RESPONSES_PER_TASK)
        if not 2 <= k <= limit:
            raise RecordError(field, f"{what} has {k} responses; this project takes 2 to {limit} per task")

    def empty_response(self, line: int | None, field: str) -> bool:
        """Apply the ``empty_responses`` option to an empty text; True means keep the record."""
        policy = self.options.get("empty_responses", "error")
        if policy == "error":
            raise RecordError(field, "is empty (option empty_responses=keep or skip accepts empty responses)")
        if policy == "skip":
            self.skip(line, f"{field} is empty")
            return False
        return True

    def add_prompt(self, spec: PromptSpec) -> None:
        """Check what every format has in common and keep the prompt for the write phase."""
        where = nul_path(asdict(spec))
        if where is not None:  # an id, a source or metadata: the texts were checked by ``text``
            raise RecordError(where.replace("external_id", "id"), NUL_MESSAGE)
        if spec.external_id in self._ids:
            first = self._ids[spec.external_id]
            also = f" (also on line {first})" if first is not None else ""
            raise RecordError(spec.id_field, f"duplicate id {spec.external_id!r}{also}")
        response_ids: set[str] = set()
        for index, response in enumerate(spec.responses):
            if response.external_id:
                if response.external_id in response_ids:
                    raise RecordError(f"responses[{index}].id", f"duplicate response id {response.external_id!r}")
                response_ids.add(response.external_id)
            if len(response.source) > SOURCE_MAX:
                raise RecordError(f"responses[{index}].source", f"is longer than {SOURCE_MAX} characters")
        for task in spec.tasks:
            self.check_k(len(task.responses), field=task.field)
            annotators: set[str] = set()
            for judgement in task.judgements:
                if judgement.annotator in annotators:
                    raise RecordError(
                        judgement.field,
                        f"annotator {judgement.annotator!r} judges this task twice",
                        line=judgement.line,
                    )
                annotators.add(judgement.annotator)
        self._ids[spec.external_id] = spec.line
        self.prompts.append(spec)


def nul_path(value: Any, path: str = "") -> str | None:
    """Where the first NUL character in a JSON-like value is (``responses[1].metadata.note``), or None."""
    if isinstance(value, str):
        return path if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            found = (inner if NUL in str(key) else None) or nul_path(item, inner)
            if found is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = nul_path(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages read by people who wrote JSON."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def require_object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RecordError(field, f"must be a JSON object, not {json_type(value)}")
    return value


def reject_unknown_keys(obj: dict[str, Any], allowed: set[str], *, prefix: str = "") -> None:
    """Unknown keys are refused, so that a misspelt field is not silently ignored."""
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise RecordError(f"{prefix}{unknown[0]}", f"unknown field (allowed: {', '.join(sorted(allowed))})")
