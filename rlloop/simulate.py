"""Simulated annotators (AlpacaFarm style): named accounts that label a project's open tasks through the REST API.

Each simulated annotator is an account ``sim-<name>`` that claims a task, scores the
responses the API showed it with a *gold* scorer (a registered reward-model version, or a
Python function of the prompt messages and the response text), draws a ranking from a
noisy choice model, and submits it, exactly as a script of a person would. It sees only
what the API returns (prompt messages, response ids and texts, the display order), never a
response's source or metadata, so a simulation cannot cheat where a person could not.

The choice model (``choose_ranking``, pure, no Django):

* Pairwise: P(the response shown first wins) = sigmoid((s_first - s_second) / temperature
  + position_bias), the Bradley-Terry model with a logit bias for the first slot.
* K > 2: Plackett-Luce with utilities s / temperature, position_bias added to the
  response shown first; for K = 2 this is the pairwise rule above.
* With probability ``random_share`` the ranking is a uniformly random order instead (the
  careless or adversarial share of a crowd; AlpacaFarm's simulated annotators flip a
  share of their labels the same way).
* Ties: never. AlpacaFarm's annotators answer strictly; a project that allows ties still
  accepts strict rankings, so ``allow_ties`` only records that ties would be allowed.

The accounts are marked in the data by a ``rlloop.models.SimulatedAnnotator`` row (the
members API says ``simulated: true``, the members page shows it); they are active, since
they authenticate with an API token, but have no usable password, so nobody can log in as
them. ``simulate`` drives them in turn (round robin), so overlap fills as it would with
people working side by side; a run is reproducible for a seed given the same claims (the
server shuffles each display order itself). Accounts are written through the ORM, so
``HttpApi`` must talk to a server on the same database. Judgements carry no
``time_taken_ms``: nobody spent time on them, and a made-up time would skew timing reports.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import random
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from annotation.models import Membership, Project, Role, TaskState
from arpad.authentication import api_token_issue
from rewardmodel.models import RewardModelVersion
from rlloop.models import SimulatedAnnotator

USERNAME_PREFIX = "sim-"
_NAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,100}$")  # what Django's username validator accepts


class SimulationError(Exception):
    """A simulation cannot go on: a refused account name, or an API answer it did not expect."""


class SpecError(ValueError):
    """An ``AnnotatorSpec`` field out of range; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# --- the choice model (pure) ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AnnotatorSpec:
    """How one simulated annotator chooses."""

    name: str
    """Account name without the prefix: the user is ``sim-<name>``."""
    temperature: float = 1.0
    """Divides the gold scores: near 0 always picks the better response, large is a coin flip."""
    position_bias: float = 0.0
    """Logit added to the response shown first (0 = none, > 0 favours the first slot)."""
    random_share: float = 0.0
    """Share of answers that are a uniformly random order whatever the scores, in [0, 1]."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise SpecError("name", f"{self.name!r} must be 1-100 letters, digits or . @ + - _")
        if not _is_number(self.temperature) or not self.temperature > 0:
            raise SpecError("temperature", f"must be a finite number > 0, got {self.temperature!r}")
        if not _is_number(self.position_bias):
            raise SpecError("position_bias", f"must be a finite number, got {self.position_bias!r}")
        if not _is_number(self.random_share) or not 0 <= self.random_share <= 1:
            raise SpecError("random_share", f"must be between 0 and 1, got {self.random_share!r}")

    @property
    def username(self) -> str:
        return USERNAME_PREFIX + self.name


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class Uniform(Protocol):
    """What the choice model needs of an rng: ``random.Random`` and ``numpy.random.Generator`` both have it."""

    def random(self) -> float: ...


def choose_ranking(
    response_ids: Sequence[int],
    scores: Sequence[float],
    *,
    spec: AnnotatorSpec,
    rng: Uniform,
    allow_ties: bool = False,
) -> list[list[int]]:
    """A ranking of ``response_ids`` (in display order, gold ``scores`` alike) as tiers, best first.

    One tier per response: see the module docstring for the model and why there are no
    ties whatever ``allow_ties`` says. Draws only ``rng.random()``, one for the random
    share and one per place, so a seeded rng reproduces the ranking.
    """
    if len(response_ids) != len(scores) or len(response_ids) < 2:
        raise ValueError(f"need one score per response and at least two, got {len(response_ids)} and {len(scores)}")
    if not all(_is_number(float(s)) for s in scores):
        raise ValueError(f"gold scores must be finite numbers, got {list(scores)}")
    if float(rng.random()) < spec.random_share:
        utilities = [0.0] * len(scores)  # Plackett-Luce with equal utilities: every order equally likely
    else:
        utilities = [float(s) / spec.temperature for s in scores]
        utilities[0] += spec.position_bias
    remaining = list(range(len(response_ids)))
    order: list[int] = []
    while len(remaining) > 1:
        top = max(utilities[i] for i in remaining)  # subtracted so that exp() cannot overflow
        weights = [math.exp(utilities[i] - top) for i in remaining]
        draw = float(rng.random()) * sum(weights)
        pick = len(remaining) - 1  # if rounding leaves the draw past the last weight
        for place, weight in enumerate(weights):
            draw -= weight
            if draw < 0:
                pick = place
                break
        order.append(remaining.pop(pick))
    order.extend(remaining)
    return [[int(response_ids[i])] for i in order]


# --- gold scores ----------------------------------------------------------------------------

GoldFunction = Callable[[list[dict[str, str]], str], float]


@dataclasses.dataclass(frozen=True)
class GoldScorer:
    """Scores the texts of one claimed task; ``label`` says what it is, for the accounts' settings."""

    label: str
    score_texts: Callable[[list[dict[str, str]], list[str]], list[float]]

    def score(self, prompt_messages: list[dict[str, str]], texts: list[str]) -> list[float]:
        scores = [float(s) for s in self.score_texts(prompt_messages, texts)]
        if len(scores) != len(texts):
            raise SimulationError(f"{self.label} gave {len(scores)} scores for {len(texts)} responses")
        return scores


def gold_scorer(gold: RewardModelVersion | GoldFunction | str) -> GoldScorer:
    """The scorer of a reward-model version, or of a function ``(prompt_messages, response_text) -> float``.

    A function may also be named by its import path, ``"package.module:function"``.
    """
    if isinstance(gold, RewardModelVersion):
        version = gold

        def score_with_version(messages: list[dict[str, str]], texts: list[str]) -> list[float]:
            # Looked up at call time: the module imports torch lazily, and tests replace it.
            from rewardmodel.services import compare

            return compare.score_batch(version, [(messages, text) for text in texts])

        return GoldScorer(label=f"reward-model:{version.label} (id {version.pk})", score_texts=score_with_version)
    if isinstance(gold, str):
        function, label = import_gold_function(gold), gold
    elif callable(gold):
        function, label = gold, f"{gold.__module__}:{gold.__qualname__}"
    else:
        raise TypeError(f"gold must be a RewardModelVersion, a function or 'module:function', not {type(gold)}")
    return GoldScorer(
        label=f"function:{label}", score_texts=lambda messages, texts: [function(messages, text) for text in texts]
    )


def import_gold_function(path: str) -> GoldFunction:
    """The function named by ``"package.module:function"``; ValueError saying what is wrong."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"{path!r} is not of the form module:function")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name}: {exc}") from None
    for part in attribute.split("."):
        found = getattr(found, part, None)
    if not callable(found):
        raise ValueError(f"{module_name} has no function {attribute}")
    return found


# --- accounts -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SimulatedAccount:
    spec: AnnotatorSpec
    user: Any
    token: str


@transaction.atomic
def simulated_accounts(project: Project, specs: Sequence[AnnotatorSpec], *, gold_label: str) -> list[SimulatedAccount]:
    """One account per spec, annotator of ``project``, with a live API token; made or brought up to date.

    Refuses (:class:`SimulationError`) a name taken by an account that is not simulated,
    and a simulated account somebody deactivated.
    """
    names = [spec.name for spec in specs]
    if not specs or len(set(names)) != len(names):
        raise SimulationError(f"need at least one annotator and distinct names, got {names}")
    accounts = []
    for spec in specs:
        user = get_user_model().objects.select_related("simulated_annotator").filter(username=spec.username).first()
        if user is None:
            user = get_user_model()(username=spec.username, is_active=True)
        elif not hasattr(user, "simulated_annotator"):
            raise SimulationError(f"user {spec.username} exists and is not a simulated annotator: choose another name")
        elif not user.is_active:
            raise SimulationError(
                f"simulated annotator {spec.username} was deactivated: reactivate it or choose another name"
            )
        # Also for an existing account: an admin may have given it a password since.
        user.set_unusable_password()
        user.save()
        # One row per account: it records the latest simulation's project and choice settings.
        SimulatedAnnotator.objects.update_or_create(
            user=user,
            defaults={"project": project, "settings": {**dataclasses.asdict(spec), "gold": gold_label}},
        )
        Membership.objects.get_or_create(project=project, user=user, defaults={"role": Role.ANNOTATOR})
        accounts.append(SimulatedAccount(spec=spec, user=user, token=api_token_issue(user=user).key))
    return accounts


# --- transport ------------------------------------------------------------------------------


class ApiClient(Protocol):
    def post(self, path: str, json: dict[str, Any] | None = None) -> tuple[int, dict[str, Any] | None]: ...


def _body(raw: bytes) -> dict[str, Any] | None:
    """The JSON object of an answer; None when empty; ``{"detail": text}`` when it is not JSON (an HTML error page)."""
    if not raw:
        return None
    try:
        body = json.loads(raw)
    except ValueError:
        return {"detail": raw.decode("utf-8", "replace")[:1000]}
    return body if isinstance(body, dict) else {"detail": body}


def _allowed_host() -> str:
    """A Host header the deployment answers to (``ALLOWED_HOSTS``; a ``.example.org`` entry means the domain)."""
    for host in settings.ALLOWED_HOSTS:
        if host != "*":
            return host.lstrip(".")
    return "localhost"


class InProcessApi:
    """The API in this process through Django's test client, authenticated by the token (no CSRF then)."""

    def __init__(self, token: str, *, host: str | None = None) -> None:
        from django.test import Client

        self.token = token
        self.host = host or _allowed_host()
        self.client = Client()

    def post(self, path: str, json: dict[str, Any] | None = None) -> tuple[int, dict[str, Any] | None]:
        response = self.client.post(
            path,
            data=_dumps(json),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Token {self.token}",
            HTTP_HOST=self.host,
            # As HTTPS, so that a deployment with SECURE_SSL_REDIRECT answers instead of redirecting.
            secure=True,
        )
        return response.status_code, _body(response.content)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # urllib turns a redirected POST into a GET; better to stop and show where it pointed.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class HttpApi:
    """The API of a running server at ``base_url`` over HTTP(S), with the standard library only."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 60.0) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{base_url!r} is not an http:// or https:// URL")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.opener = urllib.request.build_opener(_NoRedirects)

    def post(self, path: str, json: dict[str, Any] | None = None) -> tuple[int, dict[str, Any] | None]:
        request = urllib.request.Request(  # noqa: S310 - the scheme was checked in __init__
            self.base_url + path,
            data=_dumps(json).encode(),
            method="POST",
            headers={
                "Authorization": f"Token {self.token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with self.opener.open(request, timeout=self.timeout) as answer:
                return answer.status, _body(answer.read())
        except urllib.error.HTTPError as exc:
            body = _body(exc.read())
            if exc.headers.get("Location"):
                body = {**(body or {}), "location": exc.headers["Location"]}
            return exc.code, body
        except urllib.error.URLError as exc:
            raise SimulationError(f"cannot reach {self.base_url}: {exc.reason}") from None


def _dumps(body: dict[str, Any] | None) -> str:
    return "" if body is None else json.dumps(body)


# --- the loop -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SimulationSummary:
    judgements: dict[str, int]
    """Judgements submitted in this run, by username, in the order the annotators took turns."""
    open_tasks_left: int
    """Open tasks of the project when the run stopped (others' leases, or ``max_tasks``)."""
    stopped_by_max_tasks: bool

    @property
    def total(self) -> int:
        return sum(self.judgements.values())


def simulate(
    project: Project,
    specs: Sequence[AnnotatorSpec],
    *,
    scorer: GoldScorer,
    api: Callable[[str], ApiClient] = InProcessApi,
    max_tasks: int | None = None,
    seed: int = 0,
) -> SimulationSummary:
    """Label ``project``'s open tasks as the simulated annotators of ``specs``, through the API.

    ``api`` makes a client from an account's token: ``InProcessApi`` (the default), or
    ``functools.partial(HttpApi, "http://host:8000")``. The annotators take turns, one
    claim and submit each, until every one of them is told there is no work left (204) or
    ``max_tasks`` judgements were submitted. Any other answer than the expected ones raises
    :class:`SimulationError` with its status and body.
    """
    if max_tasks is not None and max_tasks < 1:
        raise ValueError(f"max_tasks must be at least 1, got {max_tasks}")
    accounts = simulated_accounts(project, specs, gold_label=scorer.label)
    clients = [api(account.token) for account in accounts]
    # One stream per annotator, seeded by its name: adding an annotator leaves the others' draws alone.
    rngs = [random.Random(f"{seed}/{account.spec.name}") for account in accounts]
    counts = {account.user.username: 0 for account in accounts}
    working = list(range(len(accounts)))
    done = 0
    while working and (max_tasks is None or done < max_tasks):
        for index in list(working):
            if max_tasks is not None and done >= max_tasks:
                break
            account = accounts[index]
            status, body = clients[index].post(f"/api/v1/projects/{project.pk}/claim/")
            if status == 204:
                working.remove(index)
                continue
            assignment = _expect(status, body, (200,), f"{account.user.username} claiming in project {project.pk}")
            assignment = assignment["assignment"]
            shown = assignment["responses"]
            scores = scorer.score(assignment["prompt"]["messages"], [r["text"] for r in shown])
            ranking = choose_ranking(
                [r["id"] for r in shown], scores, spec=account.spec, rng=rngs[index], allow_ties=project.allow_ties
            )
            # Only the client token is random outside the seed: it names the request, not the answer.
            submit = {"ranking": ranking, "client_token": str(uuid.uuid4())}
            status, body = clients[index].post(f"/api/v1/assignments/{assignment['id']}/submit/", submit)
            _expect(status, body, (200, 201), f"{account.user.username} submitting assignment {assignment['id']}")
            counts[account.user.username] += 1
            done += 1
    open_left = project.tasks.filter(state=TaskState.OPEN).count()
    return SimulationSummary(
        judgements=counts, open_tasks_left=open_left, stopped_by_max_tasks=bool(working) and max_tasks is not None
    )


def _expect(status: int, body: dict[str, Any] | None, expected: tuple[int, ...], doing: str) -> dict[str, Any]:
    if status not in expected or body is None:
        raise SimulationError(f"{doing}: the API answered {status}: {json.dumps(body)[:1000]}")
    return body
