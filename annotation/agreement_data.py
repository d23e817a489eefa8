"""The Django side of agreement: a project's rows as the arrays ``annotation.agreement`` takes.

``agreement.py`` knows nothing of models. This module reads a project's PairVotes and
Judgements with a fixed number of ``values_list`` queries (no query per row) and returns
them as :class:`~annotation.agreement.PairVotes` and
:class:`~annotation.agreement.RankingData`, together with what is needed to name the rows
again (usernames, the (task, response_a, response_b) of each unit).

Conventions carried over from the data model:

* A pairwise unit is one PairVote pair ``(task, response_a, response_b)`` with
  ``response_a < response_b``; outcome +1 means response_a was preferred.
* Ranks are tier indexes (0 = best tier) over the task's response positions
  (``TaskResponse.position``, import order: position 0 = the file's first response).
* ``a_shown_first`` is unknown (-1) for imported judgements, which were never displayed.
* Lengths are characters of the response text, unknown (-1) for placeholder responses
  whose text was not imported (``metadata.text_available`` false, e.g. MT-Bench).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from django.contrib.auth import get_user_model
from django.db.models.functions import Length

from annotation.agreement import PairVotes, RankingData
from annotation.models import Judgement, PairVote, Project, Response, Task, TaskResponse
from annotation.services import pair_votes_for


def _usernames(user_ids: np.ndarray) -> dict[int, str]:
    ids = [int(pk) for pk in np.unique(user_ids)]
    return dict(get_user_model().objects.filter(pk__in=ids).values_list("pk", "username"))


@dataclass(frozen=True)
class ProjectPairVotes:
    """A project's PairVotes as arrays; ``votes.unit`` indexes ``units``, ``votes.rater`` is the user id."""

    votes: PairVotes
    units: np.ndarray
    """(n_units, 3) int: task id, response_a id, response_b id of each unit."""
    usernames: dict[int, str]
    """User id -> username of every rater."""

    def rater_ids(self, usernames: list[str]) -> list[int]:
        """User ids of the given usernames, in that order."""
        by_name = {name: pk for pk, name in self.usernames.items()}
        return [by_name[name] for name in usernames]


def project_pair_votes(project: Project) -> ProjectPairVotes:
    """Every PairVote of ``project`` with display order, lengths, judgement time and gold."""
    rows = list(
        PairVote.objects.filter(task__project=project)
        .annotate(len_a=Length("response_a__text"), len_b=Length("response_b__text"))
        .order_by("id")
        .values_list(
            "task_id",
            "response_a_id",
            "response_b_id",
            "annotator_id",
            "winner",
            "a_shown_first",
            "judgement_id",
            "judgement__time_taken_ms",
            "len_a",
            "len_b",
        )
    )
    if rows:
        columns = list(zip(*rows, strict=True))
    else:
        columns = [()] * 10
    task, response_a, response_b, annotator, winner, shown, judgement, time_ms, len_a, len_b = columns
    keys = np.array([task, response_a, response_b], dtype=np.int64).T.reshape(-1, 3)
    units, unit_index = np.unique(keys, axis=0, return_inverse=True)
    unit_index = unit_index.reshape(-1)

    placeholders = set(
        Response.objects.filter(prompt__project=project, metadata__text_available=False).values_list("pk", flat=True)
    )
    length_a = np.array([-1 if r in placeholders else n for r, n in zip(response_a, len_a, strict=True)], dtype=int)
    length_b = np.array([-1 if r in placeholders else n for r, n in zip(response_b, len_b, strict=True)], dtype=int)

    # Gold answers are tiers on the task; expand them into the same pair outcomes as votes.
    gold_outcome: dict[tuple[int, int, int], int] = {}
    for task_id, tiers in Task.objects.filter(project=project, is_gold=True).values_list("pk", "gold_tiers"):
        for a, b, outcome, _ in pair_votes_for(tiers):
            gold_outcome[(task_id, a, b)] = outcome
    gold = np.array(
        [gold_outcome.get(key, np.nan) for key in zip(task, response_a, response_b, strict=True)], dtype=float
    )

    votes = PairVotes(
        unit=unit_index,
        rater=np.array(annotator, dtype=np.int64),
        outcome=np.array(winner, dtype=np.int64),
        a_shown_first=np.array([-1 if s is None else int(s) for s in shown], dtype=np.int64),
        len_a=length_a,
        len_b=length_b,
        judgement=np.array(judgement, dtype=np.int64),
        time_ms=np.array([np.nan if t is None else t for t in time_ms], dtype=float),
        gold=gold,
    )
    return ProjectPairVotes(votes=votes, units=units, usernames=_usernames(votes.rater))


@dataclass(frozen=True)
class ProjectRankings:
    """A project's Judgements as rank vectors over task positions; ``data.item`` is the task id."""

    data: RankingData
    judgement_ids: np.ndarray
    """Judgement id of each row."""
    time_ms: np.ndarray
    """Time each judgement took, NaN unknown."""
    usernames: dict[int, str]

    def rater_ids(self, usernames: list[str]) -> list[int]:
        by_name = {name: pk for pk, name in self.usernames.items()}
        return [by_name[name] for name in usernames]


def project_rankings(project: Project) -> ProjectRankings:
    """Every Judgement of ``project`` as ranks (tier index, 0 = best) per response position."""
    position: dict[tuple[int, int], int] = {
        (task_id, response_id): pos
        for task_id, response_id, pos in TaskResponse.objects.filter(task__project=project).values_list(
            "task_id", "response_id", "position"
        )
    }
    width = max(position.values(), default=1) + 1
    rows = list(
        Judgement.objects.filter(task__project=project)
        .order_by("id")
        .values_list("pk", "task_id", "annotator_id", "tiers", "time_taken_ms")
    )
    ranks = np.full((len(rows), width), np.nan)
    for row, (_, task_id, _, tiers, _) in enumerate(rows):
        for level, tier in enumerate(tiers):
            for response_id in tier:
                ranks[row, position[(task_id, response_id)]] = level
    judgement_ids = np.array([r[0] for r in rows], dtype=np.int64)
    data = RankingData(
        item=np.array([r[1] for r in rows], dtype=np.int64),
        rater=np.array([r[2] for r in rows], dtype=np.int64),
        ranks=ranks,
    )
    time_ms = np.array([np.nan if r[4] is None else r[4] for r in rows], dtype=float)
    return ProjectRankings(data=data, judgement_ids=judgement_ids, time_ms=time_ms, usernames=_usernames(data.rater))
