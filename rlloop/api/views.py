"""API v1: policies and training rounds (managers of the project only).

Outsiders get 404, annotators 403. Refusals answer ``{detail, code, field}`` with their status;
so does a missing policy or round (404, code ``no_such_policy`` or ``no_such_round``).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotation.models import Project
from arpad.api.permissions import IsProjectManager
from arpad.api.serializers import ErrorSerializer
from arpad.api.views import ProjectScopedMixin, RefusalMixin
from exports.models import ExportSnapshot
from jobs.api.views import KindCancelView, cancel_schema
from jobs.models import JobTrigger
from rewardmodel.models import RewardModelVersion
from rlloop.api import serializers as s
from rlloop.models import PolicyRound, PolicyVersion, SamplingJob, SamplingMode
from rlloop.sampling import sampling_job_create
from rlloop.services import PolicyError, checkpoint_names, policy_register, policy_round_create, policy_set_reference
from rlloop.standings import WHO, cached, project_leaderboard, proxy_vs_human

_ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid request, with the field at fault."),
    403: OpenApiResponse(description="Not a manager of this project."),
    404: OpenApiResponse(
        ErrorSerializer,
        description="No such policy or round in this project (code no_such_policy, no_such_round);"
        " no such project (outsiders too): detail only.",
    ),
}


class ManagerScoped(RefusalMixin, ProjectScopedMixin):
    permission_classes = [IsAuthenticated, IsProjectManager]

    def policies(self) -> QuerySet[PolicyVersion]:
        if self.is_schema_request():
            return PolicyVersion.objects.none()
        return PolicyVersion.objects.filter(project=self.project).select_related(
            "parent", "round", "reward_model", "reference"
        )

    def rounds(self) -> QuerySet[PolicyRound]:
        if self.is_schema_request():
            return PolicyRound.objects.none()
        return PolicyRound.objects.filter(project=self.project).select_related(
            "policy", "reference", "reward_model", "result", "created_by"
        )

    def policy(self, number: Any) -> PolicyVersion:
        found = self.policies().filter(number=number).first()
        if found is None:
            raise PolicyError("number", f"no policy {number} in this project", code="no_such_policy", status=404)
        return found

    def round(self, round_id: Any) -> PolicyRound:
        found = self.rounds().filter(pk=round_id).first()
        if found is None:
            raise PolicyError("round_id", f"no round {round_id} in this project", code="no_such_round", status=404)
        return found


def _in_project(model: type, project: Any, field: str, **lookup: Any) -> Any:
    found = model.objects.filter(project=project, **lookup).first()
    if found is None:
        value = next(iter(lookup.values()))
        raise PolicyError(field, f"no {field.replace('_', ' ')} {value} in this project")
    return found


def round_create_from_request(view: ManagerScoped, data: dict[str, Any], *, trigger: str) -> PolicyRound:
    """Resolve the numbers of a create request inside the project, then create the round."""
    project = view.project
    if data.get("policy") is None:
        policy = PolicyVersion.objects.filter(project=project).order_by("-number").first()
        if policy is None:
            raise PolicyError("policy", "the project has no policy yet: register a checkpoint first")
    else:
        policy = _in_project(PolicyVersion, project, "policy", number=data["policy"])
    reward_model = (
        _in_project(RewardModelVersion, project, "reward_model", number=data["reward_model"])
        if data.get("reward_model") is not None
        else None
    )
    reference = (
        _in_project(PolicyVersion, project, "reference", number=data["reference"])
        if data.get("reference") is not None
        else None
    )
    gold_reward_model = (
        _in_project(RewardModelVersion, project, "gold_reward_model", number=data["gold_reward_model"])
        if data.get("gold_reward_model") is not None
        else None
    )
    snapshot = (
        _in_project(ExportSnapshot, project, "snapshot", pk=data["snapshot"])
        if data.get("snapshot") is not None
        else None
    )
    return policy_round_create(
        project=project,
        method=data.get("method") or "ppo",
        policy=policy,
        reward_model=reward_model,
        reference=reference,
        gold_reward_model=gold_reward_model,
        snapshot=snapshot,
        data=data.get("data") or {},
        config=data.get("config") or {},
        user=view.request.user,
        trigger=trigger,
    )


class PolicyListView(ManagerScoped, generics.ListCreateAPIView):
    """The project's policy versions, newest first. POST registers a checkpoint by name (201)."""

    serializer_class = s.PolicySerializer

    def get_queryset(self) -> QuerySet[PolicyVersion]:
        return self.policies()

    @extend_schema(request=s.PolicyRegisterSerializer, responses={201: s.PolicySerializer, **_ERRORS})
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        incoming = s.PolicyRegisterSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        version = policy_register(
            project=self.project,
            name=data["name"],
            is_reference=data["is_reference"],
            generation=data.get("generation"),
            notes=data.get("notes", ""),
            user=request.user,
        )
        return Response(s.PolicySerializer(version).data, status=status.HTTP_201_CREATED)


class CheckpointListView(ManagerScoped, APIView):
    """The checkpoints the operator registered, by name: what a project may register as a policy."""

    @extend_schema(responses={200: s.CheckpointSerializer(many=True), **_ERRORS})
    def get(self, request: Request, project_id: int) -> Response:
        return Response(s.CheckpointSerializer([{"name": n} for n in checkpoint_names()], many=True).data)


class PolicyDetailView(ManagerScoped, generics.RetrieveAPIView):
    serializer_class = s.PolicySerializer

    def get_object(self) -> PolicyVersion:
        return self.policy(self.kwargs["number"])


class PolicyReferenceView(ManagerScoped, APIView):
    """Make this policy the project's reference: the model PPO rounds are leashed to by default."""

    @extend_schema(request=None, responses={200: s.PolicySerializer, **_ERRORS})
    def post(self, request: Request, project_id: int, number: int) -> Response:
        version = policy_set_reference(version=self.policy(number))
        return Response(s.PolicySerializer(self.policies().get(pk=version.pk)).data)


class RoundListView(ManagerScoped, generics.ListCreateAPIView):
    """Training rounds (PPO, SFT) of the project, newest first. POST queues a round on the GPU queue (202)."""

    serializer_class = s.RoundSerializer

    def get_queryset(self) -> QuerySet[PolicyRound]:
        return self.rounds()

    @extend_schema(request=s.RoundCreateSerializer, responses={202: s.RoundSerializer, **_ERRORS})
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        incoming = s.RoundCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        round = round_create_from_request(self, dict(incoming.validated_data), trigger=JobTrigger.API)
        return Response(s.RoundSerializer(self.rounds().get(pk=round.pk)).data, status=status.HTTP_202_ACCEPTED)


class RoundDetailView(ManagerScoped, generics.RetrieveAPIView):
    """One round with its metric history, sample tables and log tail (poll it for live progress)."""

    serializer_class = s.RoundDetailSerializer

    def get_object(self) -> PolicyRound:
        return self.round(self.kwargs["round_id"])


@cancel_schema(s.RoundSerializer, "round")
class RoundCancelView(KindCancelView):
    """Cancel a round: a queued one at once, a running one at its next update."""

    model = PolicyRound
    lookup_url_kwarg = "round_id"
    serializer_class = s.RoundSerializer


# --- sampling -------------------------------------------------------------------------------


class SamplingScoped(ManagerScoped):
    def sampling_jobs(self) -> QuerySet[SamplingJob]:
        if self.is_schema_request():
            return SamplingJob.objects.none()
        return (
            SamplingJob.objects.filter(project=self.project)
            .select_related("anchor", "reward_model", "created_by")
            .prefetch_related("policies")
        )


def sampling_create_from_request(view: ManagerScoped, data: dict[str, Any], *, trigger: str) -> SamplingJob:
    """Resolve the numbers of a create request inside the project, then create the job."""
    project = view.project
    policies = [_in_project(PolicyVersion, project, "policies", number=n) for n in data["policies"]]
    anchor = (
        _in_project(PolicyVersion, project, "anchor", number=data["anchor"]) if data.get("anchor") is not None else None
    )
    reward_model = (
        _in_project(RewardModelVersion, project, "reward_model", number=data["reward_model"])
        if data.get("reward_model") is not None
        else None
    )
    target = None
    if data.get("target") is not None and data["target"] != project.pk:
        target = Project.objects.managed_by(view.request.user).filter(pk=data["target"]).first()
        if target is None:
            raise PolicyError("target", f"no project {data['target']} that you manage")
    prompts = data.get("prompts", "unused")
    records = None
    if isinstance(prompts, list):
        prompts, records = "file", prompts
    elif not isinstance(prompts, str):
        raise PolicyError("prompts", '"unused", "project" or a list of prompts')
    return sampling_job_create(
        project=project,
        policies=policies,
        target=target,
        anchor=anchor,
        mode=data.get("mode") or SamplingMode.POOL,
        responses_per_prompt=data.get("responses_per_prompt"),
        reward_model=reward_model,
        prompts=prompts,
        prompt_records=records,
        max_prompts=data.get("max_prompts", 200),
        sampling=data.get("sampling") or {},
        priority=data.get("priority", 10),
        user=view.request.user,
        trigger=trigger,
    )


class SamplingListView(SamplingScoped, generics.ListCreateAPIView):
    """Sampling jobs of the project, newest first. POST samples policies into new tasks on the GPU queue (202)."""

    serializer_class = s.SamplingJobSerializer

    def get_queryset(self) -> QuerySet[SamplingJob]:
        return self.sampling_jobs()

    @extend_schema(request=s.SamplingCreateSerializer, responses={202: s.SamplingJobSerializer, **_ERRORS})
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        incoming = s.SamplingCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        job = sampling_create_from_request(self, dict(incoming.validated_data), trigger=JobTrigger.API)
        return Response(
            s.SamplingJobSerializer(self.sampling_jobs().get(pk=job.pk)).data, status=status.HTTP_202_ACCEPTED
        )


class SamplingDetailView(SamplingScoped, generics.RetrieveAPIView):
    """One sampling job with its summary (prompts, responses, duplicates dropped, tasks) and log tail."""

    serializer_class = s.SamplingJobSerializer

    def get_object(self) -> SamplingJob:
        found = self.sampling_jobs().filter(pk=self.kwargs["job_id"]).first()
        if found is None:
            raise PolicyError("job_id", f"no sampling job {self.kwargs['job_id']} in this project", code="no_such_sampling_job",
                              status=404)  # fmt: skip
        return found


@cancel_schema(s.SamplingJobSerializer, "sampling job")
class SamplingCancelView(KindCancelView):
    """Cancel a sampling job: a queued one at once, a running one after its current batch (its tasks stay)."""

    model = SamplingJob
    lookup_url_kwarg = "job_id"
    serializer_class = s.SamplingJobSerializer


# --- leaderboard ------------------------------------------------------------------------------


def _query_number(request: Request, name: str, default: float, low: float, high: float, *, integer: bool) -> Any:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise PolicyError(name, f"must be {kind} in [{low:g}, {high:g}]")
    return value


def leaderboard_options(request: Request) -> dict[str, Any]:
    who = request.query_params.get("who") or "all"
    if who not in WHO:
        raise PolicyError("who", f"must be one of {', '.join(WHO)}")
    return {
        "rounds": _query_number(request, "rounds", 1000, 0, 5000, integer=True),
        "level": _query_number(request, "level", 0.95, 0.5, 0.999, integer=False),
        "who": who,
    }


class LeaderboardView(ManagerScoped, APIView):
    """Bradley–Terry ratings of every response source (policies, imported models, humans) from the pair votes.

    Ties count as half wins; intervals are percentile bootstrap intervals over prompts
    (``rounds`` resamples, ``level``); ratings are on the Elo scale (1000 + 400/ln 10 · θ),
    the reference policy at 1000 when it has votes. Online Elo (``k``) in vote order, the
    win-rate matrix and the votes behind each cell come with it. ``who``: all, people or
    simulated annotators.
    """

    @extend_schema(responses={200: s.LeaderboardSerializer, **_ERRORS})
    def get(self, request: Request, project_id: int) -> Response:
        options = leaderboard_options(request)
        k = _query_number(request, "k", 32, 1, 400, integer=False)
        return Response(cached(project_leaderboard, self.project, k=k, **options))


class ProxyVsHumanView(ManagerScoped, APIView):
    """Per policy version: mean reward-model score and KL of its sampled responses beside its human win rate
    against the reference (with interval), and the length diagnostic (score vs length, share of the gain)."""

    @extend_schema(responses={200: s.ProxyVsHumanSerializer, **_ERRORS})
    def get(self, request: Request, project_id: int) -> Response:
        return Response(cached(proxy_vs_human, self.project, **leaderboard_options(request)))
