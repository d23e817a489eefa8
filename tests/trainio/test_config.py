"""The three trainers read their configs one way (trainio.config): same refusals, same messages."""

from __future__ import annotations

import pytest

from rewardmodel.train import TrainConfig
from rlloop.ppo import PPOConfig
from rlloop.sft import SFTConfig

# Each config with its required options, the name messages give its options, and its article.
CONFIGS = [
    (TrainConfig, {"base_model": "b", "data_dir": "d", "output_dir": "o"}, "a training"),
    (SFTConfig, {"policy": "p", "data": "d", "output_dir": "o"}, "an SFT"),
    (PPOConfig, {"policy": "p", "prompts": "q", "output_dir": "o", "reward_model": "r"}, "a PPO"),
]


@pytest.mark.parametrize(("cls", "required", "named"), CONFIGS)
def test_unknown_and_missing_options_are_named(cls, required, named) -> None:
    kind = named.split()[1]
    config = cls.from_dict(required)
    assert cls.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=f"^unknown {kind} option\\(s\\): bogus, lr$"):
        cls.from_dict({**required, "lr": 1, "bogus": 2})
    first, *_ = required
    with pytest.raises(ValueError, match=f"^missing {kind} option\\(s\\): {first}$"):
        cls.from_dict({k: v for k, v in required.items() if k != first})
    with pytest.raises(ValueError, match=f"^{named} config must be a JSON object$"):
        cls.from_dict([required])


@pytest.mark.parametrize(("cls", "required", "named"), CONFIGS)
def test_every_problem_is_named_at_once(cls, required, named) -> None:
    with pytest.raises(ValueError) as refused:
        cls.from_dict({**required, "output_dir": "", "seed": -1, "precision": "fp8", "lora": {"alpha": float("inf")}})
    message = str(refused.value)
    for part in ("output_dir must be a path", "seed must be an integer in [0, 2147483647]", "precision must be",
                 "lora.alpha must be > 0"):  # fmt: skip
        assert part in message


def test_the_reward_model_alone_takes_a_cuda_index_and_a_larger_lora_rank() -> None:
    rm, sft, ppo = (cls.from_dict for cls, _, _ in CONFIGS)
    (_, rm_req, _), (_, sft_req, _), (_, ppo_req, _) = CONFIGS
    assert rm({**rm_req, "device": "cuda:1", "lora": {"r": 1024}}).device == "cuda:1"
    for build, required in ((sft, sft_req), (ppo, ppo_req)):
        with pytest.raises(
            ValueError, match=r"device must be auto, cpu or cuda; lora.r must be an integer in \[1, 256\]"
        ):
            build({**required, "device": "cuda:1", "lora": {"r": 1024}})
