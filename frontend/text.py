"""Text the pages show from the server's records: what they must not show as it is.

Logs and run data of the worker jobs may hold absolute paths on the server (a checkpoint,
the artifact store, a virtualenv): the pages replace them, as ``text.js`` does for the lines
that arrive while a job runs. Administrators see the paths in the admin.
"""

from __future__ import annotations

import re
from typing import Any

# An absolute path of at least two parts, not inside a word ("3/20" is no path).
_ABS_PATH = re.compile(r"(?<![\w.])/[^\s'\"]+/[^\s'\"]*")
HIDDEN_PATH = "[server path]"


def scrub_paths(text: str) -> str:
    """``text`` with absolute server paths replaced (the same rule as ``text.js``)."""
    return _ABS_PATH.sub(HIDDEN_PATH, text)


def scrub_value(value: Any) -> Any:
    """A scalar of a run's data as a page shows it: strings scrubbed, numbers and the rest as they are."""
    return scrub_paths(value) if isinstance(value, str) else value
