"""Serializers of the policy and round API: explicit fields, no server paths."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from jobs.api.serializers import JOB_FIELDS, JobSerializer
from rlloop.models import PolicyRound, PolicyVersion, RoundMethod, SamplingJob, SamplingMode


class GenerationSerializer(serializers.Serializer):
    temperature = serializers.FloatField(required=False)
    top_p = serializers.FloatField(required=False)
    max_new_tokens = serializers.IntegerField(required=False)
    stop = serializers.ListField(child=serializers.CharField(), required=False)


class PolicySerializer(serializers.ModelSerializer):
    parent = serializers.SerializerMethodField()
    round = serializers.SerializerMethodField()
    reward_model = serializers.SerializerMethodField()
    reference = serializers.SerializerMethodField()
    generation = GenerationSerializer(read_only=True)
    metrics = serializers.DictField(read_only=True)
    display_name = serializers.CharField(read_only=True)

    class Meta:
        model = PolicyVersion
        fields = [
            "number",
            "display_name",
            "name",
            "is_reference",
            "parent",
            "round",
            "reward_model",
            "reference",
            "generation",
            "chat_template",
            "metrics",
            "notes",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.IntegerField(allow_null=True, help_text="Number of the parent policy."))
    def get_parent(self, version: PolicyVersion) -> int | None:
        return version.parent.number if version.parent_id else None

    @extend_schema_field(serializers.IntegerField(allow_null=True, help_text="Id of the round that produced it."))
    def get_round(self, version: PolicyVersion) -> int | None:
        return version.round_id

    @extend_schema_field(serializers.IntegerField(allow_null=True, help_text="Reward-model version it was trained on."))
    def get_reward_model(self, version: PolicyVersion) -> int | None:
        return version.reward_model.number if version.reward_model_id else None

    @extend_schema_field(serializers.IntegerField(allow_null=True, help_text="Policy number of its KL reference."))
    def get_reference(self, version: PolicyVersion) -> int | None:
        return version.reference.number if version.reference_id else None


class PolicyRegisterSerializer(serializers.Serializer):
    name = serializers.CharField(
        max_length=64, help_text="A registered checkpoint's name (GET .../policies/checkpoints/ lists them)."
    )
    is_reference = serializers.BooleanField(default=False, help_text="Make it the project's KL reference.")
    generation = serializers.DictField(required=False, help_text="temperature, top_p, max_new_tokens, stop.")
    notes = serializers.CharField(required=False, allow_blank=True, max_length=500)


class CheckpointSerializer(serializers.Serializer):
    name = serializers.CharField()


class RoundSerializer(JobSerializer, serializers.ModelSerializer):
    policy = serializers.IntegerField(source="policy.number", read_only=True)
    reference = serializers.SerializerMethodField()
    reward_model = serializers.SerializerMethodField()
    gold_reward_model = serializers.SerializerMethodField()
    snapshot = serializers.IntegerField(source="snapshot_id", read_only=True, allow_null=True)
    result = serializers.SerializerMethodField()
    data = serializers.DictField(read_only=True)
    config = serializers.DictField(read_only=True)
    metrics = serializers.DictField(read_only=True)

    class Meta:
        model = PolicyRound
        fields = [
            *JOB_FIELDS,
            "number",
            "method",
            "policy",
            "reference",
            "reward_model",
            "gold_reward_model",
            "snapshot",
            "result",
            "data",
            "config",
            "metrics",
            "checkpoint_step",
            "resumed_from_step",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.IntegerField(allow_null=True, help_text="Policy number of the reference."))
    def get_reference(self, round: PolicyRound) -> int | None:
        return round.reference.number if round.reference_id else None

    @extend_schema_field(serializers.IntegerField(allow_null=True, help_text="Reward-model version number."))
    def get_reward_model(self, round: PolicyRound) -> int | None:
        return round.reward_model.number if round.reward_model_id else None

    @extend_schema_field(
        serializers.IntegerField(allow_null=True, help_text="Version number of the reward model that only watches.")
    )
    def get_gold_reward_model(self, round: PolicyRound) -> int | None:
        return (round.data or {}).get("gold_reward_model")

    @extend_schema_field(serializers.IntegerField(allow_null=True, help_text="Number of the policy it produced."))
    def get_result(self, round: PolicyRound) -> int | None:
        result = getattr(round, "result", None)
        return result.number if result is not None else None


class RoundDetailSerializer(RoundSerializer):
    metrics_history = serializers.ListField(child=serializers.DictField(), read_only=True)
    samples = serializers.ListField(
        child=serializers.DictField(),
        read_only=True,
        help_text='[{"step": n, "rows": [{prompt, response, score, kl}]}]',
    )
    info = serializers.DictField(read_only=True)

    class Meta(RoundSerializer.Meta):
        fields = [*RoundSerializer.Meta.fields, "info", "samples", "metrics_history"]
        read_only_fields = fields


class RoundCreateSerializer(serializers.Serializer):
    method = serializers.ChoiceField(choices=RoundMethod.choices, default=RoundMethod.PPO)
    policy = serializers.IntegerField(
        required=False, min_value=1, help_text="Number of the policy to train; default: the newest."
    )
    reward_model = serializers.IntegerField(
        required=False, min_value=1, help_text="PPO: reward-model version number; default: the active one."
    )
    reference = serializers.IntegerField(
        required=False, min_value=1, help_text="PPO: number of the KL reference; default: the project's reference."
    )
    gold_reward_model = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text="PPO: a reward-model version that only watches: it scores the same rollouts "
        "(objective/gold_scores) and is never trained on; default: none.",
    )
    snapshot = serializers.IntegerField(
        required=False, help_text="An export: its training prompts (PPO) or consensus-best responses (SFT)."
    )
    data = serializers.DictField(
        required=False, help_text="max_prompts; SFT: source (consensus_best|demonstrations), response_source."
    )
    config = serializers.DictField(required=False, help_text="Trainer options (rlloop.ppo.PPOConfig / rlloop.sft).")


class SamplingJobSerializer(JobSerializer, serializers.ModelSerializer):
    policies = serializers.SerializerMethodField()
    anchor = serializers.SerializerMethodField()
    reward_model = serializers.SerializerMethodField()
    target = serializers.IntegerField(source="target_id", read_only=True)
    sampling = serializers.DictField(read_only=True)
    data = serializers.DictField(read_only=True)
    summary = serializers.DictField(read_only=True)

    class Meta:
        model = SamplingJob
        fields = [
            *JOB_FIELDS,
            "policies",
            "anchor",
            "reward_model",
            "target",
            "mode",
            "responses_per_prompt",
            "priority",
            "sampling",
            "data",
            "summary",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.ListField(child=serializers.IntegerField(), help_text="Policy numbers."))
    def get_policies(self, job: SamplingJob) -> list[int]:
        return sorted(p.number for p in job.policies.all())

    @extend_schema_field(serializers.IntegerField(allow_null=True, help_text="Policy number of the anchor."))
    def get_anchor(self, job: SamplingJob) -> int | None:
        return job.anchor.number if job.anchor_id else None

    @extend_schema_field(serializers.IntegerField(allow_null=True, help_text="Reward-model version number."))
    def get_reward_model(self, job: SamplingJob) -> int | None:
        return job.reward_model.number if job.reward_model_id else None


class SamplingCreateSerializer(serializers.Serializer):
    policies = serializers.ListField(
        child=serializers.IntegerField(min_value=1), min_length=1, max_length=8, help_text="Policy numbers to sample."
    )
    anchor = serializers.IntegerField(
        required=False, min_value=1, help_text="Number of a policy that answers one slot of every task."
    )
    target = serializers.IntegerField(
        required=False, help_text="Project id the tasks go to (one you manage); default: this project."
    )
    mode = serializers.ChoiceField(choices=SamplingMode.choices, default=SamplingMode.POOL)
    responses_per_prompt = serializers.IntegerField(
        required=False, help_text="K; default: the target's responses per task (head-to-head: one per policy)."
    )
    reward_model = serializers.IntegerField(
        required=False, min_value=1, help_text="Reward-model version that scores the samples; default: the active one."
    )
    prompts = serializers.JSONField(
        required=False,
        help_text='"unused" (default: prompts no round trained on), "project" (all), or a list of prompts'
        " (strings, message lists, or {prompt, id}).",
    )
    max_prompts = serializers.IntegerField(required=False, default=200)
    sampling = serializers.DictField(
        required=False, help_text="temperature, top_p, max_new_tokens, stop, seed; default: the policy's."
    )
    priority = serializers.IntegerField(required=False, default=10, help_text="Higher is served first.")


class LeaderboardPolicySerializer(serializers.Serializer):
    number = serializers.IntegerField()
    label = serializers.CharField()
    is_reference = serializers.BooleanField()
    round = serializers.IntegerField(allow_null=True)


class LeaderboardRowSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The response source.")
    theta = serializers.FloatField(help_text="Bradley–Terry log-strength.")
    rating = serializers.FloatField(help_text="1000 + 400/ln 10 · θ.")
    ci_low = serializers.FloatField(allow_null=True)
    ci_high = serializers.FloatField(allow_null=True)
    elo = serializers.FloatField(help_text="Online Elo after every vote, in order.")
    wins = serializers.IntegerField()
    losses = serializers.IntegerField()
    ties = serializers.IntegerField()
    votes = serializers.IntegerField()
    policy = LeaderboardPolicySerializer(allow_null=True)


class LeaderboardSerializer(serializers.Serializer):
    rows = LeaderboardRowSerializer(many=True, help_text="Best first.")
    names = serializers.ListField(child=serializers.CharField(), help_text="Order of the matrices.")
    win_rate = serializers.ListField(
        child=serializers.ListField(child=serializers.FloatField(allow_null=True)),
        help_text="win_rate[i][j]: share of votes i won against j, ties as half; null without votes.",
    )
    counts = serializers.ListField(child=serializers.ListField(child=serializers.IntegerField()))
    anchor = serializers.CharField(allow_null=True, help_text="The source held at rating 1000, if any.")
    level = serializers.FloatField()
    rounds = serializers.IntegerField()
    votes = serializers.IntegerField()
    skipped_same_source = serializers.IntegerField()
    k = serializers.FloatField()
    who = serializers.CharField()


class WinRateSerializer(serializers.Serializer):
    rate = serializers.FloatField(allow_null=True)
    low = serializers.FloatField(allow_null=True)
    high = serializers.FloatField(allow_null=True)
    votes = serializers.IntegerField()


class ProxyPointSerializer(serializers.Serializer):
    policy = serializers.IntegerField()
    label = serializers.CharField()
    source = serializers.CharField()
    is_reference = serializers.BooleanField()
    round = serializers.IntegerField(allow_null=True)
    samples = serializers.IntegerField()
    reward_models = serializers.ListField(child=serializers.CharField())
    score = serializers.FloatField(allow_null=True, help_text="Mean reward-model score of its sampled responses.")
    kl = serializers.FloatField(allow_null=True, help_text="Mean KL from the reference (nats per response).")
    length = serializers.FloatField(allow_null=True, help_text="Mean response length in tokens.")
    length_correlation = serializers.FloatField(allow_null=True)
    length_slope = serializers.FloatField(allow_null=True, help_text="Score per token.")
    win_rate = WinRateSerializer(allow_null=True, help_text="Human win rate against the reference.")
    score_gain = serializers.FloatField(allow_null=True)
    gain_explained_by_length = serializers.FloatField(allow_null=True)


class ProxyVsHumanSerializer(serializers.Serializer):
    reference = serializers.IntegerField(allow_null=True)
    level = serializers.FloatField()
    who = serializers.CharField()
    policies = ProxyPointSerializer(many=True)
