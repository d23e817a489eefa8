"""Standings of a project's response sources from the votes of its annotators, and the proxy beside them.

``project_leaderboard`` reads every pair vote of the project (``PairVote``: one per pair of
responses in a judgement), names each response by its ``source`` (a policy version's
``policy p3``, an imported model, ``human``), and rates the sources with
``rlloop.leaderboard``: Bradley–Terry with bootstrap intervals over prompts, online Elo in
vote order, and the win-rate matrix with the votes behind each cell. A vote between two
responses of one source says nothing about sources and is left out; so are responses with
no source.

``proxy_vs_human`` puts, for each policy version whose samples annotators judged, what the
reward model believed (mean score of its sampled responses), how far it moved (mean KL
from the reference, measured by the sampling job) and what people said (win rate against
the reference, with its interval) side by side: over-optimisation shows as a score that
rises while the win rate does not. With it, the length diagnostic: within each version's
samples, score against length in tokens (correlation, slope), and the share of the
version's score gain over the reference that the length change alone explains under the
pooled slope.

Both read every vote (and ``proxy_vs_human`` every sampled response) and bootstrap them;
the page and the API ask for them through ``cached``, which keeps a result until the
votes, the sampled responses, the policies or the simulated accounts change.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.core.cache import cache
from django.db.models import Count, Max, Sum

from annotation.models import PairVote, Project, Response
from rlloop.models import PolicyVersion, SimulatedAnnotator
from rlloop.sampling import response_source

WHO = ("all", "people", "simulated")
UNKNOWN = "unknown source"
CACHE_SECONDS = 24 * 3600


@dataclass
class ProjectVotes:
    votes: Any  # rlloop.leaderboard.Votes
    names: list[str]
    skipped_same_source: int


def project_votes(project: Project, *, who: str = "all") -> ProjectVotes:
    """Every pair vote between responses of two different sources, in the order they were cast."""
    from rlloop.leaderboard import Votes

    if who not in WHO:
        raise ValueError(f"who must be one of {', '.join(WHO)}")
    rows = PairVote.objects.filter(task__project=project)
    if who == "people":
        rows = rows.filter(annotator__simulated_annotator__isnull=True)
    elif who == "simulated":
        rows = rows.filter(annotator__simulated_annotator__isnull=False)
    rows = rows.order_by("id").values_list("response_a__source", "response_b__source", "winner", "task__prompt_id")
    index: dict[str, int] = {}
    a, b, score, group = [], [], [], []
    skipped = 0
    for source_a, source_b, winner, prompt_id in rows.iterator(chunk_size=5000):
        source_a, source_b = source_a or UNKNOWN, source_b or UNKNOWN
        if source_a == source_b:
            skipped += 1
            continue
        a.append(index.setdefault(source_a, len(index)))
        b.append(index.setdefault(source_b, len(index)))
        score.append(1.0 if winner > 0 else 0.0 if winner < 0 else 0.5)
        group.append(prompt_id)
    votes = Votes(np.array(a, dtype=int), np.array(b, dtype=int), np.array(score, dtype=float), np.array(group))
    return ProjectVotes(votes, list(index), skipped)


def _policy_sources(project: Project) -> dict[str, PolicyVersion]:
    versions = PolicyVersion.objects.filter(project=project).select_related("round")
    return {response_source(v): v for v in versions}


def project_leaderboard(
    project: Project, *, k: float = 32.0, rounds: int = 1000, level: float = 0.95, who: str = "all", seed: int = 0
) -> dict[str, Any]:
    """The leaderboard as plain JSON-able data; ratings relative to the reference policy when it has votes."""
    from rlloop.leaderboard import leaderboard

    found = project_votes(project, who=who)
    policies = _policy_sources(project)
    reference = next((source for source, v in policies.items() if v.is_reference), None)
    anchor = reference if reference in found.names else None
    if not found.names:
        out: dict[str, Any] = {"rows": [], "names": [], "win_rate": [], "counts": [], "anchor": None,
                               "level": level, "rounds": rounds}  # fmt: skip
    else:
        board = leaderboard(found.votes, found.names, anchor=anchor, k=k, rounds=rounds, level=level, seed=seed)
        out = {key: value for key, value in board.to_dict().items() if key not in ("l2", "k")}
    for row in out["rows"]:
        version = policies.get(row["name"])
        row["policy"] = None
        if version is not None:
            row["policy"] = {
                "number": version.number,
                "label": version.display_name,
                "is_reference": version.is_reference,
                "round": version.round.number if version.round_id else None,
            }
    out.update(votes=len(found.votes), skipped_same_source=found.skipped_same_source, k=k, who=who)
    return out


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None]:
    """Pearson correlation and least-squares slope of y on x; None where x or y does not vary."""
    if len(x) < 3 or np.ptp(x) == 0:
        return None, None
    slope = float(np.polyfit(x, y, 1)[0])
    if np.ptp(y) == 0:
        return None, slope
    return float(np.corrcoef(x, y)[0, 1]), slope


def proxy_vs_human(
    project: Project, *, rounds: int = 1000, level: float = 0.95, who: str = "all", seed: int = 0
) -> dict[str, Any]:
    """Per policy version: mean reward-model score and KL of its samples, human win rate against the reference."""
    from rlloop.leaderboard import win_rate_interval

    policies = _policy_sources(project)
    reference = next((v for v in policies.values() if v.is_reference), None)
    samples: dict[int, list[tuple[float, float, float | None, str]]] = defaultdict(list)
    rows = Response.objects.filter(prompt__project=project, metadata__has_key="policy_version").values_list(
        "metadata", flat=True
    )
    for meta in rows.iterator(chunk_size=2000):
        score = meta.get("reward_score")
        if not isinstance(score, int | float):
            continue
        kl = meta.get("kl")
        samples[int(meta["policy_version"])].append(
            (float(score), float(meta.get("tokens") or 0), float(kl) if isinstance(kl, int | float) else None,
             str(meta.get("reward_model", "")))
        )  # fmt: skip
    found = project_votes(project, who=who)
    index = {name: i for i, name in enumerate(found.names)}
    ref_source = response_source(reference) if reference is not None else None
    ref_samples = samples.get(reference.pk, []) if reference is not None else []
    points = []
    for source, version in sorted(policies.items(), key=lambda item: item[1].number):
        mine = samples.get(version.pk, [])
        win = None
        if ref_source is not None and source != ref_source and source in index and ref_source in index:
            rate = win_rate_interval(
                found.votes, index[source], index[ref_source], level=level, rounds=max(rounds, 1), seed=seed
            )
            interval = rounds > 0  # rounds=0: the rate alone, like the leaderboard's rows without intervals
            win = {"rate": rate.rate, "low": rate.low if interval else None, "high": rate.high if interval else None,
                   "votes": rate.votes}  # fmt: skip
        if not mine and win is None:
            continue
        scores = np.array([s[0] for s in mine])
        lengths = np.array([s[1] for s in mine])
        kls = [s[2] for s in mine if s[2] is not None]
        correlation, slope = _fit(lengths, scores)
        entry: dict[str, Any] = {
            "policy": version.number,
            "label": version.display_name,
            "source": source,
            "is_reference": version.is_reference,
            "round": version.round.number if version.round_id else None,
            "samples": len(mine),
            "reward_models": sorted({s[3] for s in mine if s[3]}),
            "score": float(scores.mean()) if len(mine) else None,
            "kl": float(np.mean(kls)) if kls else None,
            "length": float(lengths.mean()) if len(mine) else None,
            "length_correlation": correlation,
            "length_slope": slope,
            "win_rate": win,
            "score_gain": None,
            "gain_explained_by_length": None,
        }
        if ref_samples and mine and version != reference:
            ref_scores = np.array([s[0] for s in ref_samples])
            ref_lengths = np.array([s[1] for s in ref_samples])
            gain = float(scores.mean() - ref_scores.mean())
            _, pooled = _fit(np.concatenate([lengths, ref_lengths]), np.concatenate([scores, ref_scores]))
            entry["score_gain"] = gain
            if pooled is not None and abs(gain) > 1e-12:
                entry["gain_explained_by_length"] = float(pooled * (lengths.mean() - ref_lengths.mean()) / gain)
        points.append(entry)
    return {
        "reference": reference.number if reference is not None else None,
        "level": level,
        "who": who,
        "policies": points,
    }


def standings_state(project: Project) -> str:
    """A digest of what the standings of ``project`` are computed from, in a few aggregate queries.

    A new, edited or deleted vote moves the votes' count, last id or sum of winners; a new
    sampled response the responses' count or last id; a new policy or another reference the
    policies' rows; a new simulated account the accounts' (``who``). The project's creation
    time keeps a project that reuses a deleted one's id from reading its results.
    """
    votes = PairVote.objects.filter(task__project=project).aggregate(n=Count("id"), last=Max("id"), wins=Sum("winner"))
    responses = Response.objects.filter(prompt__project=project).aggregate(n=Count("id"), last=Max("id"))
    policies = list(
        PolicyVersion.objects.filter(project=project).order_by("pk").values_list("pk", "is_reference", "name")
    )
    simulated = SimulatedAnnotator.objects.aggregate(n=Count("pk"), last=Max("pk"))
    state = [project.pk, project.created_at.isoformat(), votes, responses, policies, simulated]
    return hashlib.sha256(json.dumps(state, default=str).encode()).hexdigest()


def cached(compute: Callable[..., dict[str, Any]], project: Project, **options: Any) -> dict[str, Any]:
    """``compute(project, **options)`` (``project_leaderboard`` or ``proxy_vs_human``), from the cache
    while the project's votes, samples and policies are as they were."""
    key = json.dumps([compute.__name__, standings_state(project), options], sort_keys=True, default=str)
    key = "standings:" + hashlib.sha256(key.encode()).hexdigest()
    found = cache.get(key)
    if found is None:
        found = compute(project, **options)
        cache.set(key, found, CACHE_SECONDS)
    return found
