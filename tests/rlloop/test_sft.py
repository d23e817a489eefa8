"""rlloop.sft with tiny models built in code: labels, data sources, accumulation, LoRA, resumption, learning."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from rewardmodel.hooks import TrainHooks, TrainingCancelled
from rlloop.policy import encode_prompt, load_causal_lm, load_tokenizer, read_sidecar
from rlloop.prompts import write_records
from rlloop.sft import (
    IGNORE,
    Demonstration,
    SFTConfig,
    collate,
    encode_examples,
    held_out,
    main,
    read_demonstrations,
    response_nll,
    train,
)
from tests.rewardmodel.tiny import build_llama, synthetic_snapshot

WORDS = ["river", "mountain", "city", "story"]
LORA = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}


def config(policy: Path, data: Path, out: Path, **overrides: Any) -> SFTConfig:
    options: dict[str, Any] = {
        "policy": str(policy),
        "data": str(data),
        "output_dir": str(out),
        "epochs": 1,
        "learning_rate": 1e-3,
        "batch_size": 4,
        "warmup_ratio": 0.0,
        "validation_fraction": 0.0,
        "device": "cpu",
        "checkpoint_every_steps": 1000,
        "eval_at_start": False,
    }
    options.update(overrides)
    return SFTConfig.from_dict(options)


@pytest.fixture(scope="module")
def good_file(tmp_path_factory) -> Path:
    """Demonstrations whose every response is the same short text."""
    records = [
        {"prompt": f"tell me about the {WORDS[i % 4]} {i}", "response": "good good good", "id": i} for i in range(64)
    ]
    return write_records(tmp_path_factory.mktemp("demos") / "good.jsonl", records)


@pytest.fixture(scope="module")
def varied_file(tmp_path_factory) -> Path:
    """Demonstrations of different prompt and response lengths (accumulation must weigh tokens)."""
    records = [
        {"prompt": f"tell me about the story {'please ' * (i % 5)}{i}", "response": "good alpha " * (1 + i % 4)}
        for i in range(32)
    ]
    return write_records(tmp_path_factory.mktemp("demos") / "varied.jsonl", records)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    return synthetic_snapshot(tmp_path_factory.mktemp("snapshot"), 16, k=3)


class _StopAt(TrainHooks):
    def __init__(self, step: int) -> None:
        self.step, self.seen = step, 0

    def on_step(self, step: int, total_steps: int, metrics: dict) -> None:
        self.seen = step

    def should_stop(self) -> bool:
        return self.seen >= self.step


def _last_checkpoint(out: Path) -> dict[str, torch.Tensor]:
    found = sorted((out / "checkpoints").glob("step-*"))
    return load_file(found[-1] / "model.safetensors")


# --------------------------------------------------------------------------------------
# Examples and labels


def test_labels_cover_the_response_and_its_end_token_only(tiny_policy) -> None:
    tokenizer = load_tokenizer(tiny_policy)
    prompt = "tell me about the river"
    [example] = encode_examples(tokenizer, [Demonstration(prompt, "good good good", 1)], 64)
    # The prompt is exactly what the sampler is given; the response is the template's
    # assistant turn ("good good good\n") and the eos token the template does not write.
    assert example.prompt_ids == encode_prompt(tokenizer, prompt, 64)[0]
    want = tokenizer("good good good\n", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert example.response_ids == want
    [short] = encode_examples(tokenizer, [Demonstration("why", "good", 2)], 64)
    ids, mask, labels = collate([short, example], pad_token_id=-1)
    p, n = len(example.prompt_ids), len(example.prompt_ids) + len(example.response_ids)
    row = labels[1]
    assert torch.all(row[:p] == IGNORE)
    assert row[p:n].tolist() == want
    assert ids[1, :n].tolist() == example.prompt_ids + want and int(mask[1].sum()) == n
    # The shorter row: its padding is masked and unlabelled.
    m = int(mask[0].sum())
    assert torch.all(labels[0, m:] == IGNORE) and torch.all(mask[0, m:] == 0)
    assert int((labels != IGNORE).sum()) == len(want) + 3  # "good", "\n", eos
    # The loss: summed cross-entropy at the positions before each labelled token, nothing else.
    logits = torch.randn(2, ids.shape[1], 50)
    safe = labels.clamp(min=0) % 50
    nll, _, count = response_nll(logits, torch.where(labels == IGNORE, IGNORE, safe))
    manual = sum(
        -torch.log_softmax(logits[r, t - 1], -1)[safe[r, t]]
        for r in range(2)
        for t in range(1, ids.shape[1])
        if labels[r, t] != IGNORE
    )
    assert count == len(want) + 3
    torch.testing.assert_close(nll, manual)


def test_plain_format_appends_eos_and_the_prompt_is_cut_from_the_left(tmp_path) -> None:
    tokenizer = load_tokenizer(build_llama(tmp_path / "plain"))  # no chat template
    prompt = "tell me about the river " * 10
    [example] = encode_examples(tokenizer, [Demonstration(prompt, "good good", 1)], 12)
    want = tokenizer(" good good", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert example.response_ids == want
    assert example.prompt_truncated and not example.response_truncated
    full = encode_prompt(tokenizer, prompt, 10_000)[0]
    assert example.prompt_ids == full[-(12 - len(want)) :]  # the end of the prompt ("Assistant:") stays
    [long] = encode_examples(tokenizer, [Demonstration("why", "good " * 40, 2)], 12)
    assert long.response_truncated and len(long.prompt_ids) == 1 and len(long.response_ids) == 11


def test_demonstrations_are_held_out_by_a_seeded_hash_of_the_line(good_file, tmp_path, tiny_policy) -> None:
    train_demos, val_demos, _ = read_demonstrations(config(tiny_policy, good_file, tmp_path, validation_fraction=0.25))
    assert len(train_demos) + len(val_demos) == 64 and 8 <= len(val_demos) <= 24
    assert [d.id for d in val_demos] == [i for i in range(64) if held_out(i, 0, 0.25)]
    again, _, _ = read_demonstrations(config(tiny_policy, good_file, tmp_path, validation_fraction=0.25))
    assert [d.id for d in again] == [d.id for d in train_demos]
    other, _, _ = read_demonstrations(config(tiny_policy, good_file, tmp_path, validation_fraction=0.25, seed=1))
    assert [d.id for d in other] != [d.id for d in train_demos]


def test_consensus_best_trains_on_each_groups_first_consensus_response(snapshot, tiny_policy, tmp_path) -> None:
    cfg = config(tiny_policy, snapshot, tmp_path, source="consensus_best")
    train_demos, val_demos, counts = read_demonstrations(cfg)
    groups = [json.loads(line) for line in (snapshot / "groups.jsonl").read_text().splitlines()]
    assert counts == {"groups": 16, "groups_without_consensus": 0}
    for split, demos in (("train", train_demos), ("validation", val_demos)):
        chosen = [g for g in groups if g["split"] == split]
        assert len(demos) == len(chosen) > 0
        for demo, group in zip(demos, chosen, strict=True):
            best = group["consensus"][0]
            assert demo.id == best and demo.group_id == group["group_id"]
            assert demo.response == next(r["text"] for r in group["responses"] if r["id"] == best)
            assert demo.prompt == group["prompt"]
            # The best response holds the most "good" words of its group (the synthetic rule).
            assert demo.response.split().count("good") == max(
                r["text"].split().count("good") for r in group["responses"]
            )


# --------------------------------------------------------------------------------------
# Training


def test_sft_on_one_answer_lowers_the_eval_loss_and_greedy_decoding_says_it(good_file, tiny_policy, tmp_path) -> None:
    result = train(
        config(tiny_policy, good_file, tmp_path, epochs=8, learning_rate=1e-2, batch_size=8, warmup_ratio=0.1,
               validation_fraction=0.25, eval_at_start=True)
    )  # fmt: skip
    before, after = result.info["initial_eval"]["eval/loss"], result.metrics["eval/loss"]
    print(f"eval loss {before:.4f} -> {after:.4f}")
    assert before > 5.0 and after < 0.2 and after < before / 20
    assert result.metrics["eval/token_accuracy"] == 1.0
    evals = [h["eval/loss"] for h in result.history if "eval/loss" in h]
    assert len(evals) == 9 and evals[-1] < evals[1] < evals[0]
    steps = [h for h in result.history if "loss" in h]
    assert len(steps) == result.info["total_steps"] and steps[-1]["loss"] < steps[0]["loss"] / 10
    assert {"loss", "learning_rate", "grad_norm", "tokens", "epoch"} <= set(steps[0])

    model_dir = Path(result.model_dir)
    sidecar = read_sidecar(model_dir)
    assert sidecar["format"] == "arpad-policy/1" and sidecar["trained_by"] == "rlloop.sft"
    assert sidecar["chat_template"] is True and sidecar["generation"]["max_new_tokens"] > 0
    assert json.loads((model_dir / "metrics.json").read_text())["final"]["eval/loss"] == after
    tokenizer, model = load_tokenizer(model_dir), load_causal_lm(model_dir).eval()
    eos = tokenizer.eos_token_id
    for prompt in ("tell me about the city 1000", "why how please"):  # not in the file
        ids = torch.tensor([encode_prompt(tokenizer, prompt, 64)[0]])
        out = model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=10, pad_token_id=eos,
            eos_token_id=eos,
        )[0, ids.shape[1] :].tolist()  # fmt: skip
        assert out[-1] == eos, out
        assert tokenizer.decode(out, skip_special_tokens=True).strip() == "good good good"


def test_gradient_accumulation_equals_one_large_batch(varied_file, tiny_policy, tmp_path) -> None:
    runs = {}
    for name, batch, accumulation in (("one", 8, 1), ("two", 4, 2), ("eight", 1, 8)):
        runs[name] = train(
            config(tiny_policy, varied_file, tmp_path / name, batch_size=batch, gradient_accumulation=accumulation,
                   max_examples=8)
        )  # fmt: skip
    base = load_file(tiny_policy / "model.safetensors")
    want = load_file(Path(runs["one"].model_dir) / "model.safetensors")
    assert all(float((want[k] - base[k]).abs().max()) > 5e-4 for k in want)  # one step of lr 1e-3 moved them
    first = runs["one"].history[0]
    for name in ("two", "eight"):
        [step] = runs[name].history
        assert step["tokens"] == first["tokens"]
        # Loss and gradient norm: the same token-weighted mean, not a mean of micro-batch means.
        assert step["loss"] == pytest.approx(first["loss"], rel=1e-6)
        assert step["grad_norm"] == pytest.approx(first["grad_norm"], rel=1e-5)
        got = load_file(Path(runs[name].model_dir) / "model.safetensors")
        for key in want:
            assert float((got[key] - want[key]).abs().max()) < 1e-6, (name, key)


def test_lora_moves_every_adapter_weight_and_no_base_weight(snapshot, tiny_policy, tmp_path) -> None:
    start, trained = tmp_path / "start", tmp_path / "trained"
    options = {"source": "consensus_best", "lora": LORA, "learning_rate": 1e-2, "epochs": 2}
    with pytest.raises(TrainingCancelled):
        train(config(tiny_policy, snapshot, start, **options), _StopAt(0))
    result = train(config(tiny_policy, snapshot, trained, **options))
    assert result.info["examples"] == {"train": 12, "validation": 4, "train_available": 12}
    before, after = _last_checkpoint(start), _last_checkpoint(trained)
    assert set(before) == set(after) and all(".lora_" in name for name in before)
    assert len(before) == 2 * 2 * 2  # 2 layers x (q_proj, v_proj) x (A, B)
    assert [n for n in before if torch.equal(before[n], after[n])] == []
    # The merged model: base weights untouched except q/v, which gained exactly scale * B @ A.
    base = load_file(tiny_policy / "model.safetensors")
    merged = load_file(Path(result.model_dir) / "model.safetensors")
    assert set(merged) == set(base)
    for name, weight in base.items():
        if ".q_proj." in name or ".v_proj." in name:
            prefix = "base_model.model." + name.removesuffix(".weight")
            delta = (
                (LORA["alpha"] / LORA["r"])
                * after[prefix + ".lora_B.default.weight"]
                @ after[prefix + ".lora_A.default.weight"]
            )
            assert float(delta.abs().max()) > 0
            torch.testing.assert_close(merged[name], weight + delta, atol=1e-6, rtol=0)
        else:
            assert torch.equal(merged[name], weight), name


def test_a_stopped_run_resumes_to_the_uninterrupted_weights(varied_file, tiny_policy, tmp_path) -> None:
    options = {"epochs": 2, "max_examples": 24, "checkpoint_every_steps": 4, "validation_fraction": 0.2}
    full = train(config(tiny_policy, varied_file, tmp_path / "full", **options))
    out = tmp_path / "stopped"
    with pytest.raises(TrainingCancelled) as info:
        train(config(tiny_policy, varied_file, out, **options), _StopAt(5))
    assert info.value.step == 5 and Path(info.value.checkpoint).name == "step-00000005"
    resumed = train(config(tiny_policy, varied_file, out, **options))
    assert resumed.resumed_from_step == 5
    want = load_file(Path(full.model_dir) / "model.safetensors")
    got = load_file(Path(resumed.model_dir) / "model.safetensors")
    assert set(want) == set(got)
    for name in want:
        assert torch.equal(want[name], got[name]), name

    def numbers(history: list[dict]) -> list[tuple]:
        return [(h["step"], h.get("loss"), h.get("eval/loss")) for h in history]

    assert numbers(resumed.history) == numbers(full.history)
    assert len([h for h in full.history if "eval/loss" in h]) == 2


def test_a_changed_config_or_changed_data_is_not_resumed(varied_file, tiny_policy, tmp_path) -> None:
    data = tmp_path / "demos.jsonl"
    data.write_bytes(Path(varied_file).read_bytes())
    with pytest.raises(TrainingCancelled):
        train(config(tiny_policy, data, tmp_path / "run", max_examples=8), _StopAt(1))
    with pytest.raises(ValueError, match="different config"):
        train(config(tiny_policy, data, tmp_path / "run", max_examples=8, learning_rate=2e-3))
    write_records(data, [{"prompt": "why", "response": "good"}] * 8)
    with pytest.raises(ValueError, match="different data"):
        train(config(tiny_policy, data, tmp_path / "run", max_examples=8))


def test_the_command_line_prints_a_json_line_per_step(snapshot, tiny_policy, tmp_path, capsys) -> None:
    code = main(
        ["--policy", str(tiny_policy), "--data", str(snapshot), "--source", "consensus_best", "--out",
         str(tmp_path), "--set", "batch_size=4", "--set", "device=cpu", "--set", "learning_rate=1e-3"]
    )  # fmt: skip
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"step"')]
    assert [line["step"] for line in lines] == [1, 2, 3]
    assert (tmp_path / "model" / "model.safetensors").is_file()


# --------------------------------------------------------------------------------------
# Errors


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="unknown SFT option"):
        SFTConfig.from_dict({"policy": "p", "data": "d", "output_dir": "o", "wat": 1})
    with pytest.raises(ValueError, match="missing SFT option"):
        SFTConfig.from_dict({"policy": "p", "output_dir": "o"})
    with pytest.raises(ValueError) as info:
        SFTConfig.from_dict(
            {"policy": "p", "data": "", "output_dir": "o", "source": "best", "epochs": 0, "learning_rate": -1,
             "batch_size": 1.5, "max_length": 4, "warmup_ratio": 1.0, "max_examples": 0, "precision": "fp8",
             "device": "tpu", "lora": {"r": 0}, "validation_fraction": 2, "eval_at_start": "yes"}
        )  # fmt: skip
    message = str(info.value)
    for part in (
        "data must be a path", "source must be one of", "epochs", "learning_rate", "batch_size", "max_length",
        "warmup_ratio", "max_examples", "precision", "device", "lora.r", "validation_fraction", "eval_at_start",
    ):  # fmt: skip
        assert part in message, part


def test_a_bad_data_line_is_named(tiny_policy, tmp_path) -> None:
    demos = tmp_path / "demos.jsonl"
    demos.write_text('{"prompt": "why", "response": "good"}\n\n{"prompt": "how", "response": ""}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=f"{demos}:3: response must be a non-empty string"):
        train(config(tiny_policy, demos, tmp_path / "out"))
    groups = [
        {"split": "train", "prompt": "why", "responses": [{"id": 1, "text": "good"}], "consensus": [1]},
        {"split": "train", "prompt": "how", "responses": [{"id": 2, "text": "good"}], "consensus": [3]},
    ]
    snap = tmp_path / "snap"
    snap.mkdir()
    (snap / "groups.jsonl").write_text("".join(json.dumps(g) + "\n" for g in groups), encoding="utf-8")
    with pytest.raises(ValueError, match=f"{snap / 'groups.jsonl'}:2: consensus names response 3"):
        train(config(tiny_policy, snap, tmp_path / "out", source="consensus_best"))
    with pytest.raises(ValueError, match="is a directory"):
        train(config(tiny_policy, snap, tmp_path / "out"))
