"""API v1: loop cycles (export → reward model → PPO round → sampling) and the loop rule; managers only."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from arpad.api.serializers import ErrorSerializer
from jobs.models import JobTrigger
from rlloop.api.views import ManagerScoped
from rlloop.cycle import STEP_JOBS, cycle_cancel, cycle_start
from rlloop.models import CycleStep, LoopCycle, LoopRule, PolicyVersion
from rlloop.services import PolicyError

_ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Invalid request, with the field at fault."),
    403: OpenApiResponse(description="Not a manager of this project."),
    404: OpenApiResponse(ErrorSerializer, description="No such cycle in this project (code no_such_cycle)."),
    409: OpenApiResponse(ErrorSerializer, description="A cycle is running (code busy), or it already finished."),
}
STEP_KINDS = {
    CycleStep.EXPORT: "export",
    CycleStep.REWARD_MODEL: "reward_model",
    CycleStep.POLICY_ROUND: "policy_round",
    CycleStep.SAMPLING: "sampling",
}


class StepJobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    state = serializers.CharField()
    progress = serializers.FloatField()
    error = serializers.CharField()


class CycleStepSerializer(serializers.Serializer):
    step = serializers.CharField()
    kind = serializers.CharField(help_text="The job kind: follow it at /jobs/{kind}/{id}/.")
    label = serializers.CharField()
    job = StepJobSerializer(allow_null=True)


class CycleSerializer(serializers.ModelSerializer):
    policy = serializers.IntegerField(source="policy.number", read_only=True)
    steps = serializers.SerializerMethodField()
    result = serializers.SerializerMethodField()
    options = serializers.DictField(read_only=True)

    class Meta:
        model = LoopCycle
        fields = ["id", "number", "state", "step", "policy", "result", "reason", "trigger", "options", "steps",
                  "created_at", "finished_at"]  # fmt: skip
        read_only_fields = fields

    @extend_schema_field(CycleStepSerializer(many=True))
    def get_steps(self, cycle: LoopCycle) -> list[dict[str, Any]]:
        out = []
        for step, field in STEP_JOBS.items():
            job = getattr(cycle, field)
            out.append(
                {
                    "step": step,
                    "kind": STEP_KINDS[step],
                    "label": CycleStep(step).label,
                    "job": None
                    if job is None
                    else {"id": job.pk, "state": job.state, "progress": job.progress, "error": job.error},
                }
            )
        return out

    @extend_schema_field(serializers.IntegerField(allow_null=True, help_text="Number of the policy it trained."))
    def get_result(self, cycle: LoopCycle) -> int | None:
        result = getattr(cycle.policy_round, "result", None) if cycle.policy_round_id else None
        return result.number if result is not None else None


class CycleCreateSerializer(serializers.Serializer):
    policy = serializers.IntegerField(required=False, min_value=1, help_text="Policy to train; default: the newest.")
    options = serializers.DictField(
        required=False,
        help_text="Per step: export (export parameters), reward_model (config, base_model), ppo (config,"
        " max_prompts), sampling (max_prompts, sampling, priority, responses_per_prompt).",
    )


class RuleSerializer(serializers.ModelSerializer):
    last_cycle = serializers.IntegerField(source="last_cycle.number", read_only=True, allow_null=True)

    class Meta:
        model = LoopRule
        fields = ["enabled", "min_new_pairs", "options", "last_cycle", "last_checked_at", "last_outcome"]
        read_only_fields = ["last_cycle", "last_checked_at", "last_outcome"]


class Scoped(ManagerScoped):
    def cycles(self) -> QuerySet[LoopCycle]:
        if self.is_schema_request():
            return LoopCycle.objects.none()
        return LoopCycle.objects.filter(project=self.project).select_related(
            "policy", "snapshot", "reward_model_run", "policy_round", "policy_round__result", "sampling_job"
        )

    def cycle(self, cycle_id: Any) -> LoopCycle:
        found = self.cycles().filter(pk=cycle_id).first()
        if found is None:
            raise PolicyError("cycle_id", f"no cycle {cycle_id} in this project", code="no_such_cycle", status=404)
        return found


class CycleListView(Scoped, generics.ListCreateAPIView):
    """Loop cycles of the project, newest first. POST runs a cycle: its export is queued at once (202)."""

    serializer_class = CycleSerializer

    def get_queryset(self) -> QuerySet[LoopCycle]:
        return self.cycles()

    @extend_schema(request=CycleCreateSerializer, responses={202: CycleSerializer, **_ERRORS})
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        incoming = CycleCreateSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        data = incoming.validated_data
        policy = None
        if data.get("policy") is not None:
            policy = PolicyVersion.objects.filter(project=self.project, number=data["policy"]).first()
            if policy is None:
                raise PolicyError("policy", f"no policy {data['policy']} in this project")
        cycle = cycle_start(
            project=self.project, policy=policy, options=data.get("options"), user=request.user, trigger=JobTrigger.API
        )
        return Response(CycleSerializer(self.cycles().get(pk=cycle.pk)).data, status=status.HTTP_202_ACCEPTED)


class CycleDetailView(Scoped, generics.RetrieveAPIView):
    """One cycle with each step's job (kind, id, state, progress, error) and why it stopped."""

    serializer_class = CycleSerializer

    def get_object(self) -> LoopCycle:
        return self.cycle(self.kwargs["cycle_id"])


class CycleCancelView(Scoped, APIView):
    """Cancel a running cycle: its current job is cancelled and no later step starts (202); 409 once it finished."""

    @extend_schema(request=None, responses={202: CycleSerializer, **_ERRORS})
    def post(self, request: Request, project_id: int, cycle_id: int) -> Response:
        cycle = cycle_cancel(cycle=self.cycle(cycle_id), user=request.user)
        return Response(CycleSerializer(self.cycles().get(pk=cycle.pk)).data, status=status.HTTP_202_ACCEPTED)


class RuleView(Scoped, APIView):
    """The project's loop rule: start a cycle when ``min_new_pairs`` new agreed pairs arrived (checked every minute).

    PUT sets it (options as for a cycle); DELETE removes it.
    """

    @extend_schema(responses={200: RuleSerializer, **_ERRORS})
    def get(self, request: Request, project_id: int) -> Response:
        rule = LoopRule.objects.filter(project=self.project).select_related("last_cycle").first()
        if rule is None:
            raise PolicyError(None, "this project has no loop rule", code="no_rule", status=404)
        return Response(RuleSerializer(rule).data)

    @extend_schema(request=RuleSerializer, responses={200: RuleSerializer, **_ERRORS})
    def put(self, request: Request, project_id: int) -> Response:
        from rlloop.cycle import loop_rule_set

        incoming = RuleSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        rule = loop_rule_set(project=self.project, **incoming.validated_data)
        return Response(RuleSerializer(rule).data)

    @extend_schema(request=None, responses={204: None, **_ERRORS})
    def delete(self, request: Request, project_id: int) -> Response:
        LoopRule.objects.filter(project=self.project).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)
