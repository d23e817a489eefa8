"""MT-Bench human judgements ("mt-bench"), turn 1.

Judgement lines: ``{"question_id", "judge", "model_a", "model_b", "winner": "model_a" |
"model_b" | "tie"}``. The prompts come from a FastChat ``question.jsonl`` (option
``questions``; by default ``question.jsonl`` beside the judgement file): turn 1 of each
question becomes a one-turn user prompt with id ``mt-bench-<question_id>``.

One pairwise task per (question, unordered model pair), with the two models' answers as
responses (in model-name order here, stored shuffled: see ``writer.py``), and one
imported judgement per judge, by the import account ``annotator_prefix`` + judge
(``mt-bench-expert_0`` ...; ``writer.py`` has the rule). A tie needs a project that
allows ties. ``required_annotations`` is raised to the number of judges where the
project's overlap is lower.

Answer texts. The judgement file does not contain the answers. Option ``answers`` names
a folder of FastChat ``model_answer/*.jsonl`` files (``{"question_id", "model_id",
"choices": [{"turns": [...]}]}``); turn 1 of each answer is then the response text, and
a missing answer is an error. Without it, each response is a placeholder whose text says
that the answer is not included, with metadata ``{"text_available": false}``, so the
judgements and agreement can be imported and studied, but such tasks are not fit to be
annotated again. One response per (question, model) is shared by all tasks of that
question.

Duplicates. The same judge judging the same pair of the same question twice (the real
file has one such case, lines 992 and 994) is an error naming both lines by default;
option ``duplicates=first`` or ``last`` keeps one and lists the other in
``summary.skipped``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from annotation.importers.base import (
    ImportContext,
    JudgementSpec,
    Option,
    PromptSpec,
    RecordError,
    ResponseSpec,
    TaskSpec,
    json_type,
    require_object,
)
from annotation.importers.reader import InputFile, parse_json

DESCRIPTION = "MT-Bench human judgements (JSONL, turn 1) with a FastChat question.jsonl"
LABEL = "mt-bench"
OPTIONS = [
    Option("questions", "path", None, "FastChat question.jsonl (default: question.jsonl beside the file)"),
    Option("answers", "path", None, "folder of FastChat model_answer/*.jsonl files for the response texts"),
    Option(
        "duplicates",
        "choice",
        "error",
        "the same judge judging the same pair twice: error, keep the first, or keep the last",
        ("error", "first", "last"),
    ),
    Option("annotator_prefix", "prefix", "mt-bench-", "prefix for the judge usernames"),
]
WINNERS = ("model_a", "model_b", "tie")


@dataclass
class Question:
    line: int
    text: str
    category: Any
    reference: Any


@dataclass
class Vote:
    line: int
    question_id: int
    judge: str
    model_a: str
    model_b: str
    winner: str


@dataclass
class Answer:
    text: str
    file: str
    line: int
    answer_id: Any


@dataclass
class Item:
    """One (question, unordered model pair): a task."""

    models: tuple[str, str]
    votes: dict[str, Vote] = field(default_factory=dict)  # judge -> vote


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(field, f"must be an integer, not {json_type(value)}")
    return value


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RecordError(field, "must be a non-empty string")
    return value


def read_questions(ctx: ImportContext, path: Path) -> dict[int, Question]:
    questions: dict[int, Question] = {}
    source = InputFile(ctx, path, display_name=path.name)
    for line, text in source.lines():
        try:
            item = parse_json(text)
        except (ValueError, RecursionError) as exc:
            ctx.errors.add(line, "json", f"invalid JSON: {exc}", file=path.name)
            continue
        try:
            item = require_object(item, "record")
            question_id = _int(item.get("question_id"), "question_id")
            turns = item.get("turns")
            if not isinstance(turns, list) or not turns:
                raise RecordError("turns", "must be a non-empty list of turn texts")
            if question_id in questions:
                raise RecordError(
                    "question_id", f"question {question_id} again (first on line {questions[question_id].line})"
                )
            reference = item.get("reference")
            questions[question_id] = Question(
                line=line,
                text=ctx.text(turns[0], "turns[0]"),
                category=item.get("category"),
                reference=reference[0] if isinstance(reference, list) and reference else None,
            )
        except RecordError as exc:
            ctx.errors.add(line, exc.field, exc.message, file=path.name)
    return questions


def read_answers(ctx: ImportContext, folder: Path) -> dict[tuple[str, int], Answer]:
    answers: dict[tuple[str, int], Answer] = {}
    files = sorted(folder.glob("*.jsonl")) + sorted(folder.glob("*.jsonl.gz"))
    if not files:
        ctx.errors.add(None, "options.answers", f"no *.jsonl answer files in {folder.name}")
    for path in files:
        source = InputFile(ctx, path, display_name=path.name)
        for line, text in source.lines():
            try:
                item = require_object(parse_json(text), "record")
                question_id = _int(item.get("question_id"), "question_id")
                model = item.get("model_id") or path.name.split(".")[0]
                model = _name(model, "model_id")
                choices = item.get("choices")
                if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
                    raise RecordError("choices", "must be a non-empty list of {turns: [...]} objects")
                turns = choices[0].get("turns")
                if not isinstance(turns, list) or not turns:
                    raise RecordError("choices[0].turns", "must be a non-empty list of turn texts")
                text_1 = ctx.text(turns[0], "choices[0].turns[0]", allow_empty=True)
                if (model, question_id) in answers:
                    first = answers[(model, question_id)]
                    raise RecordError(
                        "question_id",
                        f"a second answer of {model} to question {question_id} (first: {first.file}:{first.line})",
                    )
                answers[(model, question_id)] = Answer(
                    text=text_1, file=path.name, line=line, answer_id=item.get("answer_id")
                )
            except (ValueError, RecursionError) as exc:
                ctx.errors.add(line, "json", f"invalid JSON: {exc}", file=path.name)
            except RecordError as exc:
                ctx.errors.add(line, exc.field, exc.message, file=path.name)
    return answers


def parse_vote(ctx: ImportContext, text: str, line: int, questions: dict[int, Question]) -> Vote:
    try:
        item = parse_json(text)
    except (ValueError, RecursionError) as exc:
        raise RecordError("json", f"invalid JSON: {exc}") from None
    item = require_object(item, "record")
    for key in ("question_id", "judge", "model_a", "model_b", "winner"):
        if key not in item:
            raise RecordError(key, "is missing")
    if "turn" in item and item["turn"] != 1:
        raise RecordError("turn", f"only turn 1 judgements can be imported, not turn {item['turn']!r}")
    question_id = _int(item["question_id"], "question_id")
    if question_id not in questions:
        raise RecordError("question_id", f"question {question_id} is not in the questions file")
    judge = _name(item["judge"], "judge")
    model_a = _name(item["model_a"], "model_a")
    model_b = _name(item["model_b"], "model_b")
    if model_a == model_b:
        raise RecordError("model_b", f"is the same model as model_a ({model_a!r})")
    winner = item["winner"]
    if winner not in WINNERS:
        raise RecordError("winner", f"unknown value {winner!r}: use model_a, model_b or tie")
    if winner == "tie" and not ctx.project.allow_ties:
        raise RecordError("winner", "is a tie, but this project does not allow ties")
    ctx.username(ctx.options["annotator_prefix"] + judge, "judge")
    return Vote(line=line, question_id=question_id, judge=judge, model_a=model_a, model_b=model_b, winner=winner)


def parse(ctx: ImportContext) -> None:
    options = ctx.options
    questions_path = options["questions"] or ctx.path.parent / "question.jsonl"
    if not questions_path.is_file():
        ctx.errors.fatal(
            None, "options.questions", f"questions file {questions_path.name} not found: pass option questions=PATH"
        )
    answers_path = options["answers"]
    if answers_path is not None and not answers_path.is_dir():
        ctx.errors.fatal(None, "options.answers", f"{answers_path.name} is not a folder of model answer files")
    questions = read_questions(ctx, questions_path)
    answers = read_answers(ctx, answers_path) if answers_path is not None else None
    if ctx.errors:
        return  # every judgement would be checked against a broken questions or answers file

    items: dict[tuple[int, tuple[str, str]], Item] = {}
    policy = options["duplicates"]
    duplicates = 0
    for line, text in InputFile(ctx).lines():
        ctx.records += 1
        with ctx.record(line):
            vote = parse_vote(ctx, text, line, questions)
            models = tuple(sorted((vote.model_a, vote.model_b)))
            item = items.setdefault((vote.question_id, models), Item(models=models))  # type: ignore[arg-type]
            earlier = item.votes.get(vote.judge)
            if earlier is not None:
                what = f"judge {vote.judge} judged question {vote.question_id}, {models[0]} vs {models[1]}"
                if policy == "error":
                    raise RecordError(
                        "judge", f"{what} twice: lines {earlier.line} and {line} (option duplicates=first or last)"
                    )
                duplicates += 1
                if policy == "first":
                    ctx.skip(line, f"{what} again; kept line {earlier.line} (duplicates=first)")
                    continue
                ctx.skip(earlier.line, f"{what} again on line {line}; kept line {line} (duplicates=last)")
            item.votes[vote.judge] = vote
    if duplicates:
        ctx.summary.notes.append(f"{duplicates} duplicate judgement(s) resolved with duplicates={policy}")
    if ctx.errors:
        return

    by_question: dict[int, list[Item]] = {}
    for (question_id, _), item in sorted(items.items()):
        by_question.setdefault(question_id, []).append(item)
    for question_id, question_items in by_question.items():
        first_line = min(vote.line for item in question_items for vote in item.votes.values())
        with ctx.record(first_line):
            prompt = build_prompt(ctx, question_id, questions[question_id], question_items, answers)
            prompt.metadata["import"]["questions_file"] = questions_path.name
            ctx.add_prompt(prompt)
    if answers is None:
        ctx.summary.notes.append(
            "answer texts are not in the judgement file: responses are placeholders "
            '(metadata "text_available": false); pass option answers=FOLDER for the texts'
        )


def build_prompt(
    ctx: ImportContext,
    question_id: int,
    question: Question,
    items: list[Item],
    answers: dict[tuple[str, int], Answer] | None,
) -> PromptSpec:
    models = sorted({model for item in items for model in item.models})
    responses = []
    for model in models:
        if answers is None:
            text = (
                f"[The answer of {model} to MT-Bench question {question_id} is not included in the judgement file; "
                "import with the answers option to show it.]"
            )
            metadata: dict[str, Any] = {"text_available": False, "model": model}
        else:
            answer = answers.get((model, question_id))
            if answer is None:
                line = min(vote.line for item in items if model in item.models for vote in item.votes.values())
                raise RecordError(
                    "model_a", f"no answer of {model} to question {question_id} in the answers folder", line=line
                )
            text = answer.text
            metadata = {
                "text_available": True,
                "model": model,
                "answer_id": answer.answer_id,
                "answer_file": answer.file,
            }
        responses.append(ResponseSpec(text=text, source=model, external_id=model, metadata=metadata))
    position = {model: index for index, model in enumerate(models)}
    prefix = ctx.options["annotator_prefix"]
    tasks = []
    for item in items:
        first, second = item.models
        judgements = []
        for vote in sorted(item.votes.values(), key=lambda vote: vote.line):
            a_first = 0 if vote.model_a == first else 1  # task positions: 0 = first, 1 = second
            if vote.winner == "tie":
                tiers = [[0, 1]]
            elif vote.winner == "model_a":
                tiers = [[a_first], [1 - a_first]]
            else:
                tiers = [[1 - a_first], [a_first]]
            judgements.append(JudgementSpec(annotator=prefix + vote.judge, tiers=tiers, field="judge", line=vote.line))
        lines = sorted(vote.line for vote in item.votes.values())
        tasks.append(
            TaskSpec(
                responses=[position[first], position[second]],
                line=lines[0],
                source=LABEL,
                metadata={"question_id": question_id, "models": [first, second], "mt_bench_lines": lines},
                judgements=judgements,
                field="model_b",
            )
        )
    metadata = ctx.provenance(tasks[0].line, question_line=question.line)
    metadata["mt_bench"] = {"question_id": question_id, "category": question.category, "reference": question.reference}
    return PromptSpec(
        external_id=f"mt-bench-{question_id}",
        messages=[{"role": "user", "content": question.text}],
        line=tasks[0].line,
        responses=responses,
        tasks=tasks,
        metadata=metadata,
        id_field="question_id",
    )
