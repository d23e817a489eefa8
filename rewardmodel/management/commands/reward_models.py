"""``manage.py reward_models --project N [--compare A B [--snapshot ID]] [--activate V] [--cancel RUN] [--reap]``.

Without an action: the project's versions (lineage, validation metrics, which is
active), its recent runs (state, progress, attempts, error) and the registered base
models a run may start from (``train_reward_model --base NAME``).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from annotation.models import Project
from exports.models import ExportSnapshot
from jobs.lifecycle import jobs_reap
from jobs.registry import kind_of
from rewardmodel.models import RewardModelRun, RewardModelVersion
from rewardmodel.services import (
    RewardModelError,
    base_model_names,
    default_base_model,
    reward_model_run_cancel,
    reward_model_version_activate,
    reward_model_versions_compare,
)

_SHOWN_METRICS = ("accuracy", "accuracy_unanimous", "accuracy_split", "loss", "ece")


class Command(BaseCommand):
    help = "List a project's reward-model versions and runs; compare or activate versions; cancel a run."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", type=int, required=True)
        parser.add_argument("--compare", type=int, nargs=2, metavar=("A", "B"), help="two version numbers")
        parser.add_argument("--snapshot", type=int, help="with --compare: export whose validation pairs to use")
        parser.add_argument("--activate", type=int, metavar="VERSION")
        parser.add_argument("--cancel", type=int, metavar="RUN")
        parser.add_argument("--reap", action="store_true", help="re-queue or fail runs whose worker stopped beating")
        parser.add_argument("--runs", type=int, default=10, help="how many recent runs to list")
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")

    def handle(self, *args: Any, **options: Any) -> None:
        project = Project.objects.filter(pk=options["project"]).first()
        if project is None:
            raise CommandError(f"project {options['project']} does not exist")
        try:
            if options["compare"]:
                self._compare(project, *options["compare"], snapshot_id=options["snapshot"], as_json=options["json"])
            elif options["activate"] is not None:
                version = self._version(project, options["activate"])
                reward_model_version_activate(version=version)
                self.stdout.write(self.style.SUCCESS(f"v{version.number} is now the active reward model"))
            elif options["cancel"] is not None:
                run = RewardModelRun.objects.filter(project=project, pk=options["cancel"]).first()
                if run is None:
                    raise CommandError(f"project {project.pk} has no run {options['cancel']}")
                run = reward_model_run_cancel(run=run)
                self.stdout.write(
                    f"run {run.pk}: {run.state}" + (" (stops at its next step)" if not run.is_finished else "")
                )
            elif options["reap"]:
                for reaped in jobs_reap(kinds=[kind_of(RewardModelRun)]):
                    self.stdout.write(f"run {reaped.job_id}: {reaped.outcome}")
            else:
                self._list(project, options["runs"], as_json=options["json"])
        except RewardModelError as exc:
            raise CommandError(f"{exc.field}: {exc.message}" if exc.field else exc.message) from None

    def _version(self, project: Project, number: int) -> RewardModelVersion:
        version = RewardModelVersion.objects.filter(project=project, number=number).first()
        if version is None:
            raise CommandError(f"project {project.pk} has no version {number}")
        return version

    def _compare(self, project: Project, a: int, b: int, *, snapshot_id: int | None, as_json: bool) -> None:
        snapshot = None
        if snapshot_id is not None:
            snapshot = ExportSnapshot.objects.filter(project=project, pk=snapshot_id).first()
            if snapshot is None:
                raise CommandError(f"project {project.pk} has no export {snapshot_id}")
        result = reward_model_versions_compare(
            a=self._version(project, a), b=self._version(project, b), snapshot=snapshot
        )
        if as_json:
            self.stdout.write(json.dumps(result, indent=2))
            return
        self.stdout.write(
            f"export {result['snapshot']}: {result['pairs']} validation pairs"
            + (f" (of {result['pairs_available']})" if result["pairs_available"] > result["pairs"] else "")
        )
        self.stdout.write(f"{'':10}{'accuracy':>10}{'margin':>10}{'reward std':>12}")
        for side in ("a", "b"):
            r = result[side]
            self.stdout.write(
                f"{'v' + str(r['version']):10}{r['accuracy']:>10.4f}{r['mean_margin']:>10.4f}{r['reward_std']:>12.4f}"
            )
        pearson = "n/a" if result["pearson"] is None else f"{result['pearson']:.4f}"
        spearman = "n/a" if result["spearman"] is None else f"{result['spearman']:.4f}"
        self.stdout.write(f"agreement {result['agreement']:.4f}, reward correlation {pearson} (Spearman {spearman})")

    def _list(self, project: Project, n_runs: int, *, as_json: bool) -> None:
        versions = list(RewardModelVersion.objects.filter(project=project).select_related("parent"))
        runs = list(RewardModelRun.objects.filter(project=project)[: max(0, n_runs)])
        if as_json:
            payload = {
                "versions": [
                    {
                        "number": v.number,
                        "active": v.is_active,
                        "run": v.run_id,
                        "snapshot": v.snapshot_id,
                        "base_model": v.base_model,
                        "parent": v.parent.number if v.parent else None,
                        "metrics": v.metrics,
                    }
                    for v in versions
                ],
                "runs": [
                    {"id": r.pk, "state": r.state, "progress": r.progress, "attempts": r.attempts, "error": r.error}
                    for r in runs
                ],
                "base_models": base_model_names(),
                "default_base_model": default_base_model() or None,
            }
            self.stdout.write(json.dumps(payload, indent=2))
            return
        self.stdout.write(f"versions of project {project.pk} ({project.name}):")
        if not versions:
            self.stdout.write("  none yet")
        for v in versions:
            shown = "  ".join(
                f"{k} {v.metrics[k]:.4f}" for k in _SHOWN_METRICS if isinstance(v.metrics.get(k), int | float)
            )
            lineage = f"export {v.snapshot_id}" + (f", parent v{v.parent.number}" if v.parent else "")
            self.stdout.write(
                f"  {'*' if v.is_active else ' '} v{v.number:<4} {shown}  ({lineage}; base {v.base_model})"
            )
        self.stdout.write("runs:")
        if not runs:
            self.stdout.write("  none yet")
        for r in runs:
            steps = f"{r.step}/{r.total_steps}" if r.total_steps else "-"
            line = f"  {r.pk:>5} {r.state:<10} {r.progress * 100:5.1f}% step {steps:<9} attempt {r.attempts}/{r.max_attempts}"
            if r.error:
                line += f"  {r.error.splitlines()[0][:120]}"
            self.stdout.write(line)
        default = default_base_model()
        names = [f"{name} (default)" if name == default else name for name in base_model_names()]
        self.stdout.write(f"base models: {', '.join(names) or 'none registered'}")
