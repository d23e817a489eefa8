"""The model card (README.md) saved beside a trained reward model. No Django here."""

from __future__ import annotations

from typing import Any

# Shown in the card in this order, when present.
CARD_METRICS = (
    ("accuracy", "pairwise accuracy"),
    ("loss", "Bradley–Terry loss"),
    ("margin", "mean reward gap r(chosen) - r(rejected)"),
    ("ece", "expected calibration error of sigmoid(gap)"),
    ("accuracy_unanimous", "accuracy on unanimous pairs"),
    ("agreement_unanimous", "annotator agreement on unanimous pairs"),
    ("accuracy_split", "accuracy on split-vote pairs"),
    ("agreement_split", "annotator agreement on split-vote pairs"),
    ("accuracy_single", "accuracy on single-vote pairs"),
    ("reward_mean", "reward mean (after normalization)"),
    ("reward_std", "reward std"),
)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def model_card(
    *, config: Any, metrics: dict[str, Any], history: list[dict], info: dict[str, Any], normalization: dict[str, Any]
) -> str:
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: text-classification",
        "tags: [reward-model, rlhf, arpad]",
        "---",
        "",
        "# Reward model",
        "",
        "A Bradley–Terry reward model trained by Arpad (`rewardmodel.train`) on an export snapshot of",
        "human preference judgements. It is an `AutoModelForSequenceClassification` with one output:",
        "the reward of a (prompt, response) pair, higher is better. Only differences of rewards",
        "between responses to the same prompt are meaningful.",
        "",
        "## Use",
        "",
        "```python",
        "from rewardmodel.scoring import RewardScorer",
        'scorer = RewardScorer.from_pretrained("path/to/model")',
        'scorer.score([([{"role": "user", "content": "Hi"}], "Hello! How can I help?")])',
        "```",
        "",
        f"Input format: {info.get('format')}. Reward read from: {info.get('pooling')}.",
        f"Inputs are at most {config.max_length} tokens; longer prompts are cut from the left,",
        "the response is kept (its end is cut only if it alone is too long).",
    ]
    if normalization.get("method") == "scorer_offset":
        lines += [
            "",
            f"**The raw output is offset by {normalization['offset']:.6f}**: this head has no bias to fold",
            "the normalization into, so `reward_model.json` records `reward_offset`, which",
            "`RewardScorer` subtracts. Subtract it yourself when loading with plain transformers.",
        ]
    lines += [
        "",
        "## Training",
        "",
        f"- base: `{config.base_model}`",
        f"- data: `{config.data_dir}`: {info['groups']['train']} training groups ({info['pairs']['train']} pairs),",
        f"  {info['groups']['validation']} validation groups ({info['pairs']['validation']} pairs), split by prompt",
        f"- group sizes K: {info.get('group_sizes')}",
        f"- truncated (train): {info['truncation']['train']['prompt_truncated']} prompts,"
        f" {info['truncation']['train']['response_truncated']} responses",
        f"- epochs {config.epochs}, learning rate {config.learning_rate}, {config.groups_per_batch} groups per batch"
        f" x {config.gradient_accumulation} accumulation, warmup {config.warmup_ratio}, weight decay {config.weight_decay}",
        f"- margin: {config.margin}, soft labels: {config.soft_labels}, centering: {config.center_coefficient},"
        f" LoRA: {config.lora or 'no (every weight trained)'}",
        f"- precision: {info.get('precision')}, seed {config.seed}",
        "",
        "The loss is the Bradley–Terry loss of each kept pair, every response of a prompt group forwarded",
        "once per step and the pairs weighted by the export's `weight` column (1/C(K,2) by default:",
        "InstructGPT). Rewards were shifted after",
        f"training so that {normalization.get('split')} rewards have mean 0"
        f" (offset {normalization.get('offset', 0.0):.6f}, folded by `{normalization.get('method')}`).",
        "",
        "## Validation",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key, label in CARD_METRICS:
        if key in metrics:
            lines.append(f"| {label} | {_fmt(metrics[key])} |")
    if history:
        lines += ["", "Per epoch:", "", "| epoch | accuracy | loss | ece |", "|---|---|---|---|"]
        for row in history:
            lines.append(
                f"| {row.get('epoch')} | {_fmt(row.get('accuracy'))} | {_fmt(row.get('loss'))} | {_fmt(row.get('ece'))} |"
            )
    lines += [
        "",
        "## Limitations",
        "",
        "A reward model learns what the annotators of this snapshot preferred, including their biases",
        "(length, style); split-vote pairs bound the accuracy any model can reach. Optimizing a policy",
        "against it for long will find its errors (reward hacking): compare its scores with fresh human votes.",
        "",
    ]
    return "\n".join(lines)
