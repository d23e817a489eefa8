"""``manage.py sft_round --project N [--policy V] (--snapshot ID | --response-source NAME) [--set k=v] [--wait|--inline]``.

Supervised fine-tuning: on the consensus-best response of each group of an export
(``--snapshot``, rejection-sampling fine-tuning) or on the project's responses of one
source as demonstrations (``--response-source human``). Options: ``rlloop.sft.SFTConfig``.
The first SFT result of a project becomes its reference policy.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from rlloop.management.commands._round import RoundCommand
from rlloop.models import RoundMethod


class Command(RoundCommand):
    help = "Start a supervised fine-tuning round of a project's policy (queued for a GPU worker, or --inline)."
    method = RoundMethod.SFT

    def add_arguments(self, parser: CommandParser) -> None:
        self.add_common_arguments(parser)
        parser.add_argument("--response-source", help="train on the project's responses of this source")

    def handle(self, *args: Any, **options: Any) -> None:
        project = self.project(options)
        data: dict[str, Any] = {}
        if options["response_source"]:
            data = {"source": "demonstrations", "response_source": options["response_source"]}
        self.create(project, options, data=data)
