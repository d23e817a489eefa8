"""The threshold preview of a stored project, as JSON.

:mod:`annotation.preview` computes the survival curves from votes (pure numpy); this reads
the project's pair votes and chooses the grid. The export preview endpoint
(``exports.api``), the agreement dashboard and the export page all show this one answer.
"""

from __future__ import annotations

import numpy as np

from annotation.aggregate import MajorityConfig
from annotation.agreement_data import ProjectPairVotes, project_pair_votes
from annotation.models import Project
from annotation.preview import DEFAULT_THRESHOLDS, survival_curves

MAX_PREVIEW_CURVES = 20
DEFAULT_PREVIEW_CURVES = 10


def project_preview(
    project: Project,
    config: MajorityConfig | None = None,
    max_min_votes: int | None = None,
    extra_thresholds: tuple[float, ...] = (),
    data: ProjectPairVotes | None = None,
) -> dict:
    """The threshold preview of ``project`` as JSON.

    Curves for min_votes 1..``max_min_votes``; by default up to the project's overlap or
    the most votes on one pair, whichever is larger, at most ``DEFAULT_PREVIEW_CURVES``
    (the last curve then means "that many votes or more"). The grid is 0.5 .. 1 by 0.025
    plus ``extra_thresholds`` (the one a form has chosen, so that its count is exact).
    ``data``: the project's pair votes when the caller has read them already.
    """
    grid = sorted({*DEFAULT_THRESHOLDS, *(float(t) for t in extra_thresholds)})
    votes = (data if data is not None else project_pair_votes(project)).votes
    if max_min_votes is None:
        max_min_votes = int(project.annotations_per_task)
        if len(votes):
            max_min_votes = max(max_min_votes, int(np.unique(votes.unit, return_counts=True)[1].max()))
        max_min_votes = min(max_min_votes, DEFAULT_PREVIEW_CURVES)
    return survival_curves(votes, base=config, thresholds=grid, max_min_votes=max_min_votes).as_dict()
