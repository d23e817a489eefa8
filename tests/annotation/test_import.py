"""The import layer: formats, all-or-nothing writes, limits, the malformed corpus and the CLI."""

from __future__ import annotations

import gzip
import importlib
import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from annotation.importers import FORMATS, MAX_ERRORS, ImportFailed, ImportSummary, import_file
from annotation.models import (
    ImportedAccount,
    ImportJob,
    Judgement,
    JudgementSource,
    Membership,
    PairVote,
    ProjectKind,
    Prompt,
    Response,
    Role,
    Task,
    TaskState,
)
from annotation.services import pair_votes_for
from tests.factories import ProjectFactory, PromptFactory, UserFactory

MALFORMED = Path(__file__).resolve().parent.parent / "data" / "malformed"


# --- helpers ------------------------------------------------------------------------------


def db_counts() -> dict[str, int]:
    """Row counts of every model of the project and of users: must not move on a refusal."""
    models = [*apps.get_app_config("annotation").get_models(), get_user_model()]
    return {model.__name__: model.objects.count() for model in models}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def failed(**kwargs: Any) -> ImportFailed:
    with pytest.raises(ImportFailed) as caught:
        import_file(**kwargs)
    return caught.value


def hh(chosen_turns: list[str], rejected_turns: list[str]) -> dict[str, str]:
    """An HH line from alternating turns, Human first."""

    def dialogue(turns: list[str]) -> str:
        roles = ["Human", "Assistant"]
        return "".join(f"\n\n{roles[i % 2]}: {text}" for i, text in enumerate(turns))

    return {"chosen": dialogue(chosen_turns), "rejected": dialogue(rejected_turns)}


def task_responses(task: Task) -> list[Response]:
    """The task's responses in stored order, which the import shuffled: not the file's order."""
    by_id = {r.pk: r for r in Response.objects.filter(pk__in=task.response_ids())}
    return [by_id[rid] for rid in task.response_ids()]


def by_text(task: Task) -> dict[str, Response]:
    return {r.text: r for r in task_responses(task)}


def hh_pair(task: Task) -> tuple[Response, Response]:
    """(chosen, rejected) of an HH task, found by the label the import keeps for managers."""
    labelled = {r.metadata["hh_label"]: r for r in task_responses(task)}
    return labelled["chosen"], labelled["rejected"]


@pytest.fixture
def ranking_project(db):
    return ProjectFactory(kind=ProjectKind.RANKING, responses_per_task=3, annotations_per_task=2)


@pytest.fixture
def ties_project(db):
    return ProjectFactory(allow_ties=True, annotations_per_task=3)


# --- the public interface ---------------------------------------------------------------------


def test_formats_are_listed():
    assert set(FORMATS) == {"jsonl", "hh-rlhf", "oasst", "pandalm", "mt-bench"}
    assert all(isinstance(text, str) and text for text in FORMATS.values())


def test_summary_as_dict():
    summary = ImportSummary(prompts=1, skipped=[{"line": 3, "reason": "r"}], notes=["n"])
    assert summary.as_dict() == {
        "prompts": 1,
        "responses": 0,
        "tasks": 0,
        "judgements": 0,
        "annotators_created": 0,
        "shuffle_seed": "",
        "skipped": [{"line": 3, "reason": "r"}],
        "notes": ["n"],
    }


# --- generic JSONL ----------------------------------------------------------------------------


@pytest.mark.django_db
class TestGenericJsonl:
    def test_imports_prompts_responses_and_tasks(self, ranking_project, tmp_path):
        path = write_jsonl(
            tmp_path / "items.jsonl",
            [
                {
                    "id": "q1",
                    "prompt": "What is 2+2?",
                    "responses": ["4", "5"],
                    "priority": 7,
                    "metadata": {"set": "a"},
                },
                {
                    "id": "q2",
                    "messages": [
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "Hi"},
                    ],
                    "responses": [
                        {"text": "Hello", "model": "m1", "id": "r1", "metadata": {"t": 0.7}},
                        {"text": "Hey", "source": "human"},
                        "Yo",
                    ],
                },
            ],
        )
        summary = import_file(project=ranking_project, path=path, format="jsonl")
        assert (summary.prompts, summary.responses, summary.tasks, summary.judgements) == (2, 5, 2, 0)
        assert summary.skipped == [] and summary.annotators_created == 0

        first = Task.objects.get(prompt__external_id="q1")
        assert first.prompt.messages == [{"role": "user", "content": "What is 2+2?"}]
        assert (first.num_responses, first.required_annotations, first.priority) == (2, 2, 7)
        assert first.metadata == {"set": "a"} and first.source == "items.jsonl"
        assert first.state == TaskState.OPEN and first.judgement_count == 0
        assert sorted(r.text for r in task_responses(first)) == ["4", "5"]

        second = Task.objects.get(prompt__external_id="q2")
        assert second.prompt.messages[0] == {"role": "system", "content": "Be brief."}
        responses = task_responses(second)
        assert sorted((r.text, r.source, r.external_id) for r in responses) == [
            ("Hello", "m1", "r1"),
            ("Hey", "human", ""),
            ("Yo", "", ""),
        ]
        assert by_text(second)["Hello"].metadata == {"t": 0.7}
        assert second.prompt.metadata["import"] == {
            "format": "jsonl",
            "file": "items.jsonl",
            "line": 2,
            "id_generated": False,
            "shuffle_seed": summary.shuffle_seed,
        }

    def test_gold_and_judgements(self, ranking_project, tmp_path):
        ranking_project.allow_ties = True
        ranking_project.save()
        path = write_jsonl(
            tmp_path / "judged.jsonl",
            [
                {
                    "id": "g1",
                    "prompt": "Rank these",
                    "responses": ["a", "b", "c"],
                    "gold": [[2], [0, 1]],
                    "judgements": [
                        {"annotator": "alice", "ranking": [[1], [0], [2]], "rationale": "b is clearest"},
                        {"annotator": "bob", "ranking": [[0, 1, 2]]},
                        {"annotator": "carol", "ranking": [[2], [1], [0]]},
                    ],
                }
            ],
        )
        summary = import_file(project=ranking_project, path=path, format="jsonl")
        assert summary.judgements == 3 and summary.annotators_created == 3
        task = Task.objects.get()
        a, b, c = (by_text(task)[text].pk for text in ("a", "b", "c"))
        assert task.is_gold and task.gold_tiers == [[c], sorted([a, b])]
        # Three judgements on an overlap of 2: the task is raised to hold them all and is complete.
        assert (task.required_annotations, task.judgement_count, task.state) == (3, 3, TaskState.COMPLETE)
        assert task.completed_at is not None
        alice = Judgement.objects.get(annotator__username="alice")
        assert alice.tiers == [[b], [a], [c]] and alice.rationale == "b is clearest"
        assert alice.source == JudgementSource.IMPORT and alice.assignment is None
        assert PairVote.objects.count() == 9
        for judgement in Judgement.objects.all():
            votes = sorted(
                PairVote.objects.filter(judgement=judgement).values_list(
                    "response_a", "response_b", "winner", "a_shown_first"
                )
            )
            assert votes == sorted(pair_votes_for(judgement.tiers))

    def test_partly_judged_task_stays_open(self, project, tmp_path):
        path = write_jsonl(
            tmp_path / "one.jsonl",
            [{"prompt": "Q", "responses": ["a", "b"], "judgements": [{"annotator": "x", "ranking": [[1], [0]]}]}],
        )
        import_file(project=project, path=path, format="jsonl")
        task = Task.objects.get()
        assert (task.required_annotations, task.judgement_count, task.state) == (3, 1, TaskState.OPEN)
        assert task.completed_at is None

    def test_generated_id_is_stable_and_refuses_a_second_import(self, project, tmp_path):
        path = write_jsonl(tmp_path / "noid.jsonl", [{"prompt": "Q", "responses": ["a", "b"]}])
        import_file(project=project, path=path, format="jsonl")
        prompt = Prompt.objects.get()
        assert prompt.external_id.startswith("sha256:") and len(prompt.external_id) == 27
        assert prompt.metadata["import"]["id_generated"] is True
        before = db_counts()
        error = failed(project=project, path=path, format="jsonl").errors[0]
        assert (error.line, error.field) == (1, "id") and "already exists" in error.message
        assert db_counts() == before

    def test_same_content_on_two_lines_is_a_duplicate(self, project, tmp_path):
        row = {"prompt": "Q", "responses": ["a", "b"]}
        path = write_jsonl(tmp_path / "twice.jsonl", [row, row])
        error = failed(project=project, path=path, format="jsonl").errors[0]
        assert error.line == 2 and "also on line 1" in error.message

    def test_empty_responses_can_be_skipped_and_are_listed(self, project, tmp_path):
        path = write_jsonl(
            tmp_path / "e.jsonl",
            [{"prompt": "Q1", "responses": ["a", "b"]}, {"prompt": "Q2", "responses": ["a", " "]}],
        )
        summary = import_file(project=project, path=path, format="jsonl", options={"empty_responses": "skip"})
        assert summary.tasks == 1
        assert summary.skipped == [{"line": 2, "reason": "responses[1] is empty"}]
        kept = import_file(project=ProjectFactory(), path=path, format="jsonl", options={"empty_responses": "keep"})
        assert kept.tasks == 2

    def test_a_nul_character_is_refused_with_its_line_and_field_on_every_database(self, project, tmp_path):
        # PostgreSQL's text and jsonb cannot hold U+0000; SQLite could, but a file must not
        # import on one database and fail on the other.
        rows = [
            {"prompt": "Q1", "responses": ["a", "b"]},
            {"prompt": "Q2", "responses": ["a", "b\u0000c"]},
            {"id": "x\u0000", "prompt": "Q3", "responses": ["a", "b"]},
            {"prompt": "Q4", "responses": ["a", {"text": "b", "metadata": {"note": ["ok", "\u0000"]}}]},
            {"prompt": "Q5", "responses": ["a", {"text": "b", "model": "m\u0000"}]},
        ]
        path = tmp_path / "nul.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        assert "\\u0000" in path.read_text()  # as JSON escapes, the way such files arrive
        errors = failed(project=project, path=path, format="jsonl").errors
        assert [(e.line, e.field) for e in errors] == [
            (2, "responses[1]"),
            (3, "id"),
            (4, "responses[1].metadata.note[1]"),
            (5, "responses[1].source"),
        ]
        assert all("NUL character" in e.message for e in errors)
        assert not Prompt.objects.filter(project=project).exists()

    def test_blank_lines_and_crlf_are_fine(self, project, tmp_path):
        path = tmp_path / "crlf.jsonl"
        path.write_bytes(
            b'\xef\xbb\xbf{"prompt": "Q", "responses": ["a", "b"]}\r\n\r\n{"prompt": "R", "responses": ["a", "b"]}\r\n'
        )
        assert import_file(project=project, path=path, format="jsonl").tasks == 2

    def test_annotator_prefix(self, project, tmp_path):
        path = write_jsonl(
            tmp_path / "p.jsonl",
            [{"prompt": "Q", "responses": ["a", "b"], "judgements": [{"annotator": "x", "ranking": [[0], [1]]}]}],
        )
        import_file(project=project, path=path, format="jsonl", options={"annotator_prefix": "ext-"})
        assert Judgement.objects.get().annotator.username == "ext-x"


# --- response order ------------------------------------------------------------------------------


@pytest.mark.django_db
class TestResponseOrder:
    """Ids and positions follow a recorded shuffle, not the file (whose order can be the answer)."""

    def ranked_file(self, tmp_path: Path) -> Path:
        # Every line lists its responses best first, and says so in a judgement and as gold.
        rows = [
            {
                "id": f"q{n}",
                "prompt": f"Question {n}?",
                "responses": [f"best {n}", f"middle {n}", f"worst {n}"],
                "gold": [[0], [1], [2]],
                "judgements": [{"annotator": "ranker", "ranking": [[0], [1], [2]]}],
            }
            for n in range(40)
        ]
        return write_jsonl(tmp_path / "ranked.jsonl", rows)

    def texts_in_id_order(self, project) -> list[str]:
        return list(
            Response.objects.filter(prompt__project=project)
            .order_by("prompt__external_id", "pk")
            .values_list("text", flat=True)
        )

    def test_ids_and_positions_do_not_follow_the_file_but_judgements_still_do(self, tmp_path):
        project = ProjectFactory(kind=ProjectKind.RANKING, responses_per_task=3)
        summary = import_file(project=project, path=self.ranked_file(tmp_path), format="jsonl")
        best_lowest = best_first = 0
        for task in Task.objects.filter(project=project):
            texts = {r.pk: r.text for r in task_responses(task)}
            best_lowest += texts[min(texts)].startswith("best")
            best_first += texts[task.response_ids()[0]].startswith("best")
            # The judgement and the gold answer name the responses the file meant.
            for tiers in (task.judgements.get().tiers, task.gold_tiers):
                assert [texts[tier[0]].split()[0] for tier in tiers] == ["best", "middle", "worst"]
        # In file order both would be 40 of 40; shuffled, about a third.
        assert best_lowest < 30 and best_first < 30
        # Ids follow the stored positions, so neither tells more than the other.
        assert all(task.response_ids() == sorted(task.response_ids()) for task in Task.objects.filter(project=project))
        assert len(summary.shuffle_seed) == 16
        assert Prompt.objects.filter(project=project, metadata__import__shuffle_seed=summary.shuffle_seed).count() == 40

    def test_the_same_file_and_seed_give_the_same_order(self, tmp_path):
        path = self.ranked_file(tmp_path)
        projects = [ProjectFactory(kind=ProjectKind.RANKING, responses_per_task=3) for _ in range(4)]
        orders = []
        for project, seed in zip(projects, ["one", "one", "two", None], strict=True):
            options = {"shuffle_seed": seed} if seed else {}
            summary = import_file(project=project, path=path, format="jsonl", options=options)
            assert summary.shuffle_seed == (seed or summary.shuffle_seed)
            orders.append(self.texts_in_id_order(project))
        assert orders[0] == orders[1]
        assert orders[0] != orders[2] and orders[0] != orders[3]
        # An integer seed is its decimal text.
        as_int = ProjectFactory(kind=ProjectKind.RANKING, responses_per_task=3)
        as_text = ProjectFactory(kind=ProjectKind.RANKING, responses_per_task=3)
        import_file(project=as_int, path=path, format="jsonl", options={"shuffle_seed": 7})
        import_file(project=as_text, path=path, format="jsonl", options={"shuffle_seed": "7"})
        assert self.texts_in_id_order(as_int) == self.texts_in_id_order(as_text)

    @pytest.mark.parametrize("seed", [True, "", "x" * 101, "tab\there", 1.5, ["a"]])
    def test_a_bad_seed_is_refused_by_name(self, project, tmp_path, seed):
        path = write_jsonl(tmp_path / "x.jsonl", [{"prompt": "Q", "responses": ["a", "b"]}])
        error = failed(project=project, path=path, format="jsonl", options={"shuffle_seed": seed}).errors[0]
        assert (error.field, error.line) == ("options.shuffle_seed", None)

    def test_every_format_lists_the_common_options(self):
        from annotation.importers import format_options

        for name in FORMATS:
            names = [option["name"] for option in format_options(name)]
            assert names[-2:] == ["shuffle_seed", "judgements_by_members"], name


# --- annotator accounts -------------------------------------------------------------------------


@pytest.mark.django_db
class TestAnnotatorAccounts:
    def judged(self, tmp_path: Path, name: str) -> Path:
        return write_jsonl(
            tmp_path / f"{name}.jsonl",
            [
                {
                    "prompt": f"Q {name}",
                    "responses": ["a", "b"],
                    "judgements": [{"annotator": name, "ranking": [[0], [1]]}],
                }
            ],
        )

    def test_created_accounts_cannot_log_in_are_flagged_and_join_as_annotators(self, project, tmp_path, client):
        summary = import_file(project=project, path=self.judged(tmp_path, "newbie"), format="jsonl")
        user = get_user_model().objects.get(username="newbie")
        assert summary.annotators_created == 1
        assert not user.has_usable_password() and not user.is_active
        flag = ImportedAccount.objects.get(user=user)
        assert (flag.project, flag.format, flag.file_name) == (project, "jsonl", "newbie.jsonl")
        assert Membership.objects.get(project=project, user=user).role == Role.ANNOTATOR
        # Inactive, so even a password an admin sets by mistake does not let it log in.
        user.set_password("now-it-has-one")
        user.save()
        assert not client.login(username="newbie", password="now-it-has-one")

    def test_a_members_account_is_refused_without_consent(self, project, annotator, manager, tmp_path):
        before = db_counts()
        for name in ("annotator", "manager"):
            error = failed(project=project, path=self.judged(tmp_path, name), format="jsonl").errors[0]
            assert (error.line, error.field) == (1, "judgements[0]")
            assert "member of this project" in error.message and "judgements_by_members" in error.message
        assert db_counts() == before

    def test_a_members_account_is_used_when_the_manager_opts_in(self, project, annotator, manager, tmp_path):
        consent = {"judgements_by_members": True}
        summary = import_file(project=project, path=self.judged(tmp_path, "annotator"), format="jsonl", options=consent)
        assert summary.annotators_created == 0
        assert "judgements written in the name of 1 member(s) (judgements_by_members): annotator" in summary.notes
        assert Judgement.objects.get().annotator == annotator
        assert not ImportedAccount.objects.exists()
        import_file(project=project, path=self.judged(tmp_path, "manager"), format="jsonl", options=consent)
        assert Membership.objects.get(project=project, user=manager).role == Role.MANAGER  # role kept

    def test_import_account_from_another_project_joins(self, project, other_project, tmp_path):
        import_file(project=other_project, path=self.judged(tmp_path, "labeler"), format="jsonl")
        summary = import_file(project=project, path=self.judged(tmp_path, "labeler"), format="jsonl")
        assert summary.annotators_created == 0
        assert Membership.objects.filter(user__username="labeler").count() == 2

    @pytest.mark.parametrize("consent", [False, True])
    def test_a_real_account_outside_the_project_is_refused(self, project, outsider, tmp_path, consent):
        before = db_counts()
        options = {"judgements_by_members": consent}
        error = failed(project=project, path=self.judged(tmp_path, "outsider"), format="jsonl", options=options)
        error = error.errors[0]
        assert (error.line, error.field) == (1, "judgements[0]") and "not a member" in error.message
        assert db_counts() == before

    def test_an_account_without_a_password_is_not_an_import_account(self, project, tmp_path):
        # Before, any passwordless account was taken for an import account and pulled into
        # the project: an SSO user or one an admin made without a password, say.
        person = UserFactory(username="sso-person", password=None)
        person.set_unusable_password()
        person.save()
        before = db_counts()
        error = failed(project=project, path=self.judged(tmp_path, "sso-person"), format="jsonl").errors[0]
        assert "not an import account" in error.message
        assert db_counts() == before and not Membership.objects.filter(user=person).exists()

    def test_accounts_of_earlier_imports_are_flagged_by_the_migration(self, project, annotator, tmp_path):
        import_file(project=project, path=self.judged(tmp_path, "old-import"), format="jsonl")
        old = get_user_model().objects.get(username="old-import")
        # As an import before the flag left it: no flag, active, no usable password.
        ImportedAccount.objects.all().delete()
        get_user_model().objects.filter(pk=old.pk).update(is_active=True)
        passwordless = UserFactory(username="never-judged", password=None)
        passwordless.set_unusable_password()
        passwordless.save()

        migration = importlib.import_module("annotation.migrations.0003_importedaccount")
        migration.flag_earlier_import_accounts(apps, None)
        assert list(ImportedAccount.objects.values_list("user__username", flat=True)) == ["old-import"]
        old.refresh_from_db()
        annotator.refresh_from_db()
        assert not old.is_active and annotator.is_active


# --- reading: gzip, encodings, limits, error cap, progress --------------------------------------


@pytest.mark.django_db
class TestReading:
    rows = [{"prompt": f"Q{i}", "responses": ["a", "b"]} for i in range(5)]

    def payload(self) -> bytes:
        return "".join(json.dumps(row) + "\n" for row in self.rows).encode()

    def test_gzip_is_detected_by_content_not_name(self, project, tmp_path):
        disguised = tmp_path / "upload-7f3a.bin"
        disguised.write_bytes(gzip.compress(self.payload()))
        assert import_file(project=project, path=disguised, format="jsonl").tasks == 5
        plain = tmp_path / "plain.jsonl.gz"
        plain.write_bytes(self.payload())
        assert import_file(project=ProjectFactory(), path=plain, format="jsonl").tasks == 5

    def test_truncated_gzip(self, project, tmp_path):
        path = tmp_path / "cut.jsonl.gz"
        rows = "".join(json.dumps({"prompt": f"Q{i}", "responses": ["a", "b"]}) + "\n" for i in range(2000))
        data = gzip.compress(rows.encode())
        path.write_bytes(data[: len(data) // 2])
        before = db_counts()
        exc = failed(project=project, path=path, format="jsonl")
        assert exc.errors[-1].field == "gzip" and "truncated" in exc.errors[-1].message
        assert exc.errors[-1].line is not None
        assert db_counts() == before

    def test_corrupt_gzip(self, project, tmp_path):
        path = tmp_path / "flipped.jsonl.gz"
        data = bytearray(gzip.compress(self.payload()))
        data[-6] ^= 0xFF  # inside the CRC-32 trailer
        path.write_bytes(bytes(data))
        error = failed(project=project, path=path, format="jsonl").errors[-1]
        assert error.field == "gzip" and "corrupt" in error.message

    def test_bad_utf8_inside_gzip_names_the_line(self, project, tmp_path):
        path = tmp_path / "latin.jsonl.gz"
        path.write_bytes(
            gzip.compress(self.payload() + '{"prompt": "café", "responses": ["a", "b"]}\n'.encode("latin-1"))
        )
        error = failed(project=project, path=path, format="jsonl").errors[0]
        assert (error.line, error.field) == (6, "encoding") and "UTF-8" in error.message

    def test_decompressed_size_limit_stops_a_bomb(self, project, tmp_path, settings):
        settings.ARPAD_IMPORT_MAX_BYTES = 4096
        path = tmp_path / "bomb.jsonl.gz"
        path.write_bytes(gzip.compress(self.payload() * 1000))
        assert path.stat().st_size < 4096
        error = failed(project=project, path=path, format="jsonl").errors[-1]
        assert error.field == "file" and "ARPAD_IMPORT_MAX_BYTES" in error.message

    def test_line_length_is_bounded(self, project, tmp_path, settings):
        settings.ARPAD_IMPORT_MAX_FIELD_CHARS = 100
        path = tmp_path / "long.jsonl"
        path.write_text('{"prompt": "' + "x" * 10_000 + '", "responses": ["a", "b"]}\n')
        error = failed(project=project, path=path, format="jsonl").errors[-1]
        assert (error.line, error.field) == (1, "line")

    def test_other_compression_is_named(self, project, tmp_path):
        path = tmp_path / "data.zip"
        path.write_bytes(b"PK\x03\x04rest-of-a-zip")
        error = failed(project=project, path=path, format="jsonl").errors[0]
        assert error.field == "file" and "zip" in error.message

    def test_errors_stop_at_the_cap(self, project, tmp_path):
        path = tmp_path / "many.jsonl"
        path.write_text("not json\n" * (MAX_ERRORS + 50))
        exc = failed(project=project, path=path, format="jsonl")
        assert len(exc.errors) == MAX_ERRORS and exc.truncated
        assert [e.line for e in exc.errors] == list(range(1, MAX_ERRORS + 1))
        assert f"stopped after {MAX_ERRORS} errors" in str(exc)

    def test_every_bad_line_is_reported_not_only_the_first(self, project, tmp_path):
        path = tmp_path / "three.jsonl"
        path.write_text(
            '{"prompt": "ok", "responses": ["a", "b"]}\nnope\n{"prompt": "", "responses": ["a", "b"]}\n[]\n'
        )
        exc = failed(project=project, path=path, format="jsonl")
        assert [(e.line, e.field) for e in exc.errors] == [(2, "json"), (3, "prompt"), (4, "record")]

    def test_display_name_is_used_in_errors(self, project, tmp_path):
        path = tmp_path / "0b5e2c.upload"
        path.write_text("nope\n")
        exc = failed(project=project, path=path, format="jsonl", display_name="my data.jsonl")
        assert exc.errors[0].file == "my data.jsonl"
        assert str(exc.errors[0]).startswith("my data.jsonl:1: json: invalid JSON")

    def test_progress_runs_from_zero_to_one(self, project, tmp_path):
        path = tmp_path / "p.jsonl"
        path.write_text("".join(json.dumps({"prompt": f"Q{i}", "responses": ["a", "b"]}) + "\n" for i in range(2500)))
        seen: list[float] = []
        import_file(project=project, path=path, format="jsonl", progress=seen.append)
        assert seen[0] == 0.0 and seen[-1] == 1.0 and len(seen) > 3
        assert all(0.0 <= f <= 1.0 for f in seen) and seen == sorted(seen)

    def test_options_are_checked(self, project, tmp_path):
        path = write_jsonl(tmp_path / "x.jsonl", self.rows)
        exc = failed(project=project, path=path, format="hh-rlhf", options={"divergent": "guess", "colour": "red"})
        assert {(e.field, e.line) for e in exc.errors} == {("options.divergent", None), ("options.colour", None)}
        exc = failed(project=project, path=path, format="hh-rlhf", options={"import_preference": "maybe"})
        assert exc.errors[0].field == "options.import_preference"
        exc = failed(project=project, path=path, format="hh-rlhf", options={"annotator": "no spaces please"})
        assert exc.errors[0].field == "options.annotator" and "cannot be (part of) a username" in exc.errors[0].message
        exc = failed(project=project, path=path, format="pandalm", options={"annotator_prefix": "a b"})
        assert exc.errors[0].field == "options.annotator_prefix"
        exc = failed(project=project, path=path, format="jsonl", options=["empty_responses"])
        assert exc.errors[0].field == "options"
        summary = import_file(project=project, path=path, format="jsonl", options={"annotator_prefix": ""})
        assert summary.tasks == 5

    @pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
    def test_a_non_finite_number_option_is_refused_by_name(self, project, tmp_path, value):
        # int(inf) raises OverflowError, which the option check let through as a crash.
        path = write_jsonl(tmp_path / "x.jsonl", self.rows)
        error = failed(project=project, path=path, format="oasst", options={"max_trees": value}).errors[0]
        assert (error.field, error.line) == ("options.max_trees", None)
        assert "must be a whole number" in error.message

    def test_missing_file(self, project, tmp_path):
        error = failed(project=project, path=tmp_path / "nope.jsonl", format="jsonl").errors[0]
        assert (error.field, error.message) == ("file", "not found")


# --- the malformed corpus ----------------------------------------------------------------------

# (file, format, project settings, options, line, field, part of the message)
MALFORMED_CASES = [
    ("bad_json.jsonl", "jsonl", {}, {}, 2, "json", "invalid JSON"),
    ("not_object.jsonl", "jsonl", {}, {}, 2, "record", "must be a JSON object"),
    ("wrong_type_responses.jsonl", "jsonl", {}, {}, 1, "responses", "must be a list"),
    ("missing_prompt.jsonl", "jsonl", {}, {}, 1, "prompt", "is missing"),
    ("duplicate_id.jsonl", "jsonl", {}, {}, 3, "id", "duplicate id 'same' (also on line 1)"),
    ("k_mismatch_pairwise.jsonl", "jsonl", {}, {}, 1, "responses", "pairwise project needs exactly 2"),
    ("empty_prompt.jsonl", "jsonl", {}, {}, 1, "prompt", "is empty"),
    ("empty_response.jsonl", "jsonl", {}, {}, 1, "responses[1]", "is empty"),
    ("oversized_field.jsonl", "jsonl", {}, {}, 2, "responses[0].text", "ARPAD_IMPORT_MAX_FIELD_CHARS"),
    ("bad_encoding.jsonl", "jsonl", {}, {}, 2, "encoding", "not valid UTF-8 at byte 16"),
    ("too_many_responses.jsonl", "jsonl", {"kind": "ranking", "responses_per_task": 3}, {}, 1, "responses", "2 to 3"),
    ("bad_role.jsonl", "jsonl", {}, {}, 1, "messages[0].role", "must be one of user, assistant, system"),
    ("gold_out_of_range.jsonl", "jsonl", {}, {}, 1, "gold", "not part of this task"),
    ("judged_twice.jsonl", "jsonl", {}, {}, 1, "judgements[1]", "judges this task twice"),
    ("unknown_field.jsonl", "jsonl", {}, {}, 1, "respones", "unknown field"),
    ("priority_not_int.jsonl", "jsonl", {}, {}, 1, "priority", "must be an integer"),
    ("nan_value.jsonl", "jsonl", {}, {}, 1, "json", "NaN is not valid JSON"),
    # Python reads 1e400 as infinity, which the database refused for the whole import, unplaced.
    ("number_too_large.jsonl", "jsonl", {}, {}, 1, "json", "the number 1e400 is too large"),
    ("deep_nested.jsonl", "jsonl", {}, {}, 2, "json", "nested too deeply"),
    ("pandalm_deep_nested.json", "pandalm", {}, {}, 3, "[1]", "nested too deeply"),
    ("huge_priority.jsonl", "jsonl", {}, {}, 1, "priority", "is out of range"),
    ("huge_response_id.jsonl", "jsonl", {}, {}, 1, "judgements[0].ranking", "[18446744073709551616] are not part"),
    ("empty.jsonl", "jsonl", {}, {}, 1, "file", "holds no records"),
    ("blank_lines_only.jsonl", "jsonl", {}, {}, 1, "file", "holds no records"),
    ("empty.jsonl", "pandalm", {}, {}, 1, "file", "holds no records"),
    ("hh_missing_rejected.jsonl", "hh-rlhf", {}, {}, 1, "rejected", "is missing"),
    ("hh_no_assistant.jsonl", "hh-rlhf", {}, {}, 1, "rejected", 'must end with an "\\n\\nAssistant:" turn'),
    ("hh_divergent.jsonl", "hh-rlhf", {}, {"divergent": "error"}, 2, "rejected", "differ before the last assistant"),
    ("pandalm_unknown_label.json", "pandalm", {"allow_ties": True}, {}, 2, "[0].annotator2", "unknown label 5"),
    ("pandalm_tie.json", "pandalm", {}, {}, 3, "[1].annotator3", "does not allow ties"),
    ("pandalm_jsonl_not_list.json", "pandalm", {}, {}, 1, "json", "must be a JSON list"),
    ("oasst_too_many_replies.jsonl", "oasst", {}, {}, 1, "prompt.replies", "message m1 has 3 responses"),
    ("mtbench_unknown_winner.jsonl", "mt-bench", {}, {}, 2, "winner", "unknown value 'model_c'"),
    ("mtbench_duplicate.jsonl", "mt-bench", {}, {}, 3, "judge", "twice: lines 1 and 3"),
    ("mtbench_unknown_question.jsonl", "mt-bench", {}, {}, 1, "question_id", "question 7 is not in the questions file"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "fmt", "project_kwargs", "options", "line", "field", "message"),
    MALFORMED_CASES,
    ids=[f"{case[1]}:{case[0]}" for case in MALFORMED_CASES],
)
def test_malformed_input_is_refused_and_writes_nothing(
    settings, tmp_path, name, fmt, project_kwargs, options, line, field, message
):
    settings.ARPAD_IMPORT_MAX_FIELD_CHARS = 100
    project = ProjectFactory(**project_kwargs)
    PromptFactory(project=project, external_id="already-here")  # something to keep
    before = db_counts()
    exc = failed(project=project, path=MALFORMED / name, format=fmt, options=options)
    assert db_counts() == before
    matching = [e for e in exc.errors if (e.file, e.line, e.field) == (name, line, field)]
    assert matching, f"no error at {name}:{line}: {field}; got {[str(e) for e in exc.errors]}"
    assert message in matching[0].message
    assert f"{name}:{line}: {field}: " in str(exc)


def test_the_corpus_is_large_enough():
    files = {case[0] for case in MALFORMED_CASES}
    assert len(files) >= 15
    assert files <= {path.name for path in MALFORMED.iterdir()}


@pytest.mark.django_db
def test_unknown_format_is_refused(project):
    before = db_counts()
    exc = failed(project=project, path=MALFORMED / "bad_json.jsonl", format="csv")
    assert db_counts() == before
    error = exc.errors[0]
    assert (error.file, error.line, error.field) == ("bad_json.jsonl", None, "format")
    assert "unknown format 'csv'" in str(exc)


@pytest.mark.django_db
def test_duplicate_against_existing_prompt(project, tmp_path):
    PromptFactory(project=project, external_id="q1")
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "q0", "prompt": "A", "responses": ["a", "b"]}] * 1)
    path.write_text(path.read_text() + json.dumps({"id": "q1", "prompt": "B", "responses": ["a", "b"]}) + "\n")
    before = db_counts()
    error = failed(project=project, path=path, format="jsonl").errors[0]
    assert (error.line, error.field) == (2, "id") and "already exists in this project" in error.message
    assert db_counts() == before
    # Another project may hold the same id.
    assert import_file(project=ProjectFactory(), path=path, format="jsonl").tasks == 2


@pytest.mark.django_db
def test_late_failure_in_the_write_phase_rolls_everything_back(project, tmp_path, monkeypatch):
    """Even an error after rows were inserted leaves nothing behind."""
    from annotation.importers import writer

    path = write_jsonl(tmp_path / "w.jsonl", [{"prompt": f"Q{i}", "responses": ["a", "b"]} for i in range(30)])
    monkeypatch.setattr(writer, "PROMPT_BATCH", 10)
    calls = {"n": 0}
    real = writer._write_batch

    def flaky(ctx, chunk, *, users):
        calls["n"] += 1
        if calls["n"] == 3:
            from django.db import IntegrityError

            raise IntegrityError("simulated")
        return real(ctx, chunk, users=users)

    monkeypatch.setattr(writer, "_write_batch", flaky)
    before = db_counts()
    exc = failed(project=project, path=path, format="jsonl")
    assert "simulated" in str(exc) and db_counts() == before


# --- HH-RLHF ------------------------------------------------------------------------------------


@pytest.mark.django_db
class TestHHRLHF:
    def test_normal_pair(self, project, tmp_path):
        path = write_jsonl(
            tmp_path / "hh.jsonl",
            [hh(["Hi", "Hello!", "How are you?", "Fine"], ["Hi", "Hello!", "How are you?", "Bad"])],
        )
        summary = import_file(project=project, path=path, format="hh-rlhf")
        assert summary.tasks == 1 and summary.notes == []
        task = Task.objects.get()
        assert task.source == "hh-rlhf" and task.metadata == {}
        assert task.prompt.messages == [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "How are you?"},
        ]
        chosen, rejected = hh_pair(task)
        assert (chosen.text, rejected.text) == ("Fine", "Bad")
        assert chosen.metadata == {"hh_label": "chosen"} and chosen.source == "hh-rlhf"
        assert task.prompt.external_id.startswith("hh-")
        assert not Judgement.objects.exists()

    def test_divergent_pair_is_split_at_the_shared_prefix(self, project, tmp_path):
        row = hh(["A", "B", "C", "D"], ["A", "X", "C", "D2"])
        path = write_jsonl(tmp_path / "hh.jsonl", [row])
        summary = import_file(project=project, path=path, format="hh-rlhf")
        task = Task.objects.get()
        assert task.metadata == {"hh_divergent": True}
        assert task.prompt.messages == [{"role": "user", "content": "A"}]
        chosen, rejected = hh_pair(task)
        # The rest of each dialogue, verbatim, later turns included.
        assert chosen.text == "B\n\nHuman: C\n\nAssistant: D"
        assert rejected.text == "X\n\nHuman: C\n\nAssistant: D2"
        assert "1 pair(s) differ" in summary.notes[0]

    def test_divergent_at_a_human_turn_moves_back_to_an_assistant_turn(self, project, tmp_path):
        row = hh(["A", "B", "C", "D"], ["A", "B", "Z", "D"])
        path = write_jsonl(tmp_path / "hh.jsonl", [row])
        import_file(project=project, path=path, format="hh-rlhf")
        task = Task.objects.get()
        assert task.prompt.messages == [{"role": "user", "content": "A"}]
        assert [r.text for r in hh_pair(task)] == [
            "B\n\nHuman: C\n\nAssistant: D",
            "B\n\nHuman: Z\n\nAssistant: D",
        ]

    def test_divergent_of_different_lengths(self, project, tmp_path):
        # Like line 1951 of the real file: one dialogue has two assistant turns in a row.
        row = {
            "chosen": "\n\nHuman: Q\n\nAssistant: short",
            "rejected": "\n\nHuman: Q\n\nAssistant: long\n\nAssistant: more",
        }
        path = write_jsonl(tmp_path / "hh.jsonl", [row])
        import_file(project=project, path=path, format="hh-rlhf")
        task = Task.objects.get()
        assert task.prompt.messages == [{"role": "user", "content": "Q"}]
        assert [r.text for r in hh_pair(task)] == ["short", "long\n\nAssistant: more"]
        assert task.metadata == {"hh_divergent": True}

    def test_divergent_skip_lists_the_line(self, project, tmp_path):
        rows = [hh(["A", "B"], ["A", "C"]), hh(["A", "B", "C", "D"], ["A", "X", "C", "D2"])]
        path = write_jsonl(tmp_path / "hh.jsonl", rows)
        summary = import_file(project=project, path=path, format="hh-rlhf", options={"divergent": "skip"})
        assert summary.tasks == 1
        assert [s["line"] for s in summary.skipped] == [2]

    def test_unsplittable_pair_is_an_error_whatever_the_option(self, project, tmp_path):
        row = {"chosen": "\n\nHuman: A\n\nAssistant: B", "rejected": "\n\nHuman: Z\n\nAssistant: B"}
        path = write_jsonl(tmp_path / "hh.jsonl", [row])
        error = failed(project=project, path=path, format="hh-rlhf").errors[0]
        assert "cannot split" in error.message

    def test_identical_dialogues_are_an_error(self, project, tmp_path):
        path = write_jsonl(tmp_path / "hh.jsonl", [hh(["A", "B"], ["A", "B"])])
        assert "identical" in failed(project=project, path=path, format="hh-rlhf").errors[0].message

    def test_empty_reply_policies(self, project, tmp_path):
        path = write_jsonl(tmp_path / "hh.jsonl", [hh(["A", "B"], ["A", "C"]), hh(["Q", ""], ["Q", "No."])])
        summary = import_file(project=project, path=path, format="hh-rlhf")
        assert summary.tasks == 2 and any("empty final reply" in note for note in summary.notes)
        empty = Response.objects.get(text="")
        assert empty.metadata == {"hh_label": "chosen", "empty": True}
        skipped = import_file(
            project=ProjectFactory(), path=path, format="hh-rlhf", options={"empty_responses": "skip"}
        )
        assert skipped.tasks == 1 and skipped.skipped[0]["line"] == 2
        error = failed(
            project=ProjectFactory(), path=path, format="hh-rlhf", options={"empty_responses": "error"}
        ).errors[0]
        assert (error.line, error.field) == (2, "chosen (final reply)")

    def test_import_preference_records_chosen_over_rejected(self, project, tmp_path):
        path = write_jsonl(tmp_path / "hh.jsonl", [hh(["A", "B"], ["A", "C"])])
        summary = import_file(project=project, path=path, format="hh-rlhf", options={"import_preference": "true"})
        assert summary.judgements == 1 and summary.annotators_created == 1
        judgement = Judgement.objects.get()
        chosen, rejected = hh_pair(judgement.task)
        assert judgement.annotator.username == "hh-rlhf-labeler"
        assert judgement.tiers == [[chosen.pk], [rejected.pk]]
        vote = PairVote.objects.get()
        assert vote.winner == (1 if chosen.pk < rejected.pk else -1) and vote.a_shown_first is None


# --- OpenAssistant ------------------------------------------------------------------------------


def oasst_tree(replies: list[dict[str, Any]], *, tree: str = "t1", root: str = "root") -> dict[str, Any]:
    return {
        "message_tree_id": tree,
        "tree_state": "ready_for_export",
        "prompt": {"message_id": root, "text": "Question?", "role": "prompter", "synthetic": False, "replies": replies},
    }


def reply(message_id: str, rank: int | None, *, text: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "text": text or f"Answer {message_id}",
        "role": "assistant",
        "rank": rank,
        "synthetic": False,
        "replies": [],
        **extra,
    }


@pytest.mark.django_db
class TestOasst:
    def test_groups_become_k_way_tasks_down_the_tree(self, tmp_path):
        project = ProjectFactory(kind=ProjectKind.RANKING, responses_per_task=4)
        follow_up = {
            "message_id": "u2",
            "text": "And then?",
            "role": "prompter",
            "replies": [reply("c1", 1), reply("c2", 0)],
        }
        tree = oasst_tree(
            [
                reply("a1", 2, replies=[follow_up]),
                reply("a2", 0, synthetic=True, model_name="chip"),
                reply("a3", 1),
                reply("a4", None, replies=[]),
            ]
        )
        tree["prompt"]["replies"][3]["rank"] = 3
        path = write_jsonl(tmp_path / "trees.jsonl", [tree, oasst_tree([reply("x1", 0)], tree="t2", root="r2")])
        summary = import_file(project=project, path=path, format="oasst", options={"import_consensus": True})
        assert summary.tasks == 2 and summary.judgements == 2

        top = Task.objects.get(prompt__external_id="root")
        assert top.num_responses == 4 and top.source == "oasst"
        assert top.prompt.messages == [{"role": "user", "content": "Question?"}]
        responses = sorted(task_responses(top), key=lambda r: r.external_id)
        assert [r.external_id for r in responses] == ["a1", "a2", "a3", "a4"]
        assert [r.source for r in responses] == ["human", "chip", "human", "human"]
        assert responses[0].metadata["oasst_rank"] == 2
        a1, a2, a3, a4 = (r.pk for r in responses)
        judgement = top.judgements.get()
        assert judgement.annotator.username == "oasst-consensus"
        assert judgement.tiers == [[a2], [a3], [a1], [a4]]

        deeper = Task.objects.get(prompt__external_id="u2")
        assert deeper.prompt.messages == [
            {"role": "user", "content": "Question?"},
            {"role": "assistant", "content": "Answer a1"},
            {"role": "user", "content": "And then?"},
        ]

    def test_partly_ranked_groups_get_no_judgement_and_a_note(self, ranking_project, tmp_path):
        path = write_jsonl(tmp_path / "t.jsonl", [oasst_tree([reply("a", 0), reply("b", None)])])
        summary = import_file(project=ranking_project, path=path, format="oasst", options={"import_consensus": True})
        assert summary.tasks == 1 and summary.judgements == 0
        assert "partly ranked" in summary.notes[0]

    def test_without_the_option_ranks_stay_in_metadata(self, ranking_project, tmp_path):
        path = write_jsonl(tmp_path / "t.jsonl", [oasst_tree([reply("a", 1), reply("b", 0)])])
        summary = import_file(project=ranking_project, path=path, format="oasst")
        assert summary.judgements == 0
        assert sorted(Response.objects.values_list("metadata__oasst_rank", flat=True)) == [0, 1]

    def test_deleted_messages_are_left_out_and_listed(self, ranking_project, tmp_path):
        deleted = reply(
            "gone",
            0,
            deleted=True,
            replies=[
                {"message_id": "u9", "text": "x", "role": "prompter", "replies": [reply("y1", 0), reply("y2", 1)]}
            ],
        )
        path = write_jsonl(tmp_path / "t.jsonl", [oasst_tree([deleted, reply("b", 1), reply("c", 2)])])
        summary = import_file(project=ranking_project, path=path, format="oasst")
        assert summary.tasks == 1  # the deleted reply's subtree gives no task
        assert sorted(r.external_id for r in task_responses(Task.objects.get())) == ["b", "c"]
        assert summary.skipped == [{"line": 1, "reason": "deleted message gone (prompt.replies[0]) and its replies"}]

    def test_group_too_large_for_the_project(self, ranking_project, tmp_path):
        path = write_jsonl(tmp_path / "t.jsonl", [oasst_tree([reply(f"m{i}", i) for i in range(5)])])
        error = failed(project=ranking_project, path=path, format="oasst").errors[0]
        assert (error.line, error.field) == (1, "prompt.replies")
        assert "message root has 5 responses; this project takes 2 to 3" in error.message

    def test_equal_ranks_need_ties(self, ranking_project, tmp_path):
        path = write_jsonl(tmp_path / "t.jsonl", [oasst_tree([reply("a", 0), reply("b", 0)])])
        error = failed(project=ranking_project, path=path, format="oasst", options={"import_consensus": True}).errors[0]
        assert "does not allow ties" in error.message
        ranking_project.allow_ties = True
        ranking_project.save()
        import_file(project=ranking_project, path=path, format="oasst", options={"import_consensus": True})
        assert len(Judgement.objects.get().tiers) == 1

    def test_empty_text_names_the_message_path(self, ranking_project, tmp_path):
        path = write_jsonl(tmp_path / "t.jsonl", [oasst_tree([reply("a", 0), reply("b", 1, text=" ")])])
        path.write_text(path.read_text().replace('"Answer b"', '" "'))
        error = failed(project=ranking_project, path=path, format="oasst").errors[0]
        assert error.field == "prompt.replies[1].text" and error.message == "is empty"


# --- PandaLM ------------------------------------------------------------------------------------


def panda(idx: int, labels: tuple[int | None, ...], **extra: Any) -> dict[str, Any]:
    item = {"idx": idx, "instruction": "Rewrite:", "input": "a text", "response1": "one", "response2": "two"}
    item.update({f"annotator{i + 1}": label for i, label in enumerate(labels)})
    item.update(extra)
    return item


@pytest.mark.django_db
class TestPandaLM:
    def test_three_judgements_per_item(self, ties_project, tmp_path):
        path = tmp_path / "panda.json"
        path.write_text(json.dumps([panda(0, (1, 2, 0)), panda(1, (2, 2, 2), input="")], indent=2))
        summary = import_file(project=ties_project, path=path, format="pandalm")
        assert (summary.tasks, summary.judgements, summary.annotators_created) == (2, 6, 3)
        first = Task.objects.get(prompt__external_id="pandalm-0")
        assert first.prompt.messages == [{"role": "user", "content": "Rewrite:\n\na text"}]
        assert Task.objects.get(prompt__external_id="pandalm-1").prompt.messages[0]["content"] == "Rewrite:"
        assert (first.state, first.judgement_count) == (TaskState.COMPLETE, 3)
        one, two = (by_text(first)[text].pk for text in ("one", "two"))
        tiers = dict(first.judgements.values_list("annotator__username", "tiers"))
        assert tiers == {
            "pandalm-annotator1": [[one], [two]],
            "pandalm-annotator2": [[two], [one]],
            "pandalm-annotator3": [sorted([one, two])],
        }
        assert set(Membership.objects.filter(project=ties_project).values_list("user__username", flat=True)) == {
            "pandalm-annotator1",
            "pandalm-annotator2",
            "pandalm-annotator3",
        }

    def test_low_overlap_is_raised_to_hold_the_judgements(self, tmp_path):
        project = ProjectFactory(annotations_per_task=1)
        path = tmp_path / "panda.json"
        path.write_text(json.dumps([panda(0, (1, 1, 2))]))
        import_file(project=project, path=path, format="pandalm")
        task = Task.objects.get()
        assert (task.required_annotations, task.judgement_count, task.state) == (3, 3, TaskState.COMPLETE)

    def test_boolean_response_becomes_text(self, project, tmp_path):
        path = tmp_path / "panda.json"
        path.write_text(json.dumps([panda(0, (1, 1, 1), response1=True)]))
        summary = import_file(project=project, path=path, format="pandalm")
        response = Response.objects.get(metadata__pandalm_field="response1")
        assert response.text == "true" and response.metadata["pandalm_original_type"] == "boolean"
        assert "1 response(s) were JSON booleans" in summary.notes[0]

    def test_null_label_means_no_judgement(self, project, tmp_path):
        path = tmp_path / "panda.json"
        path.write_text(json.dumps([panda(0, (1, None, 2))]))
        assert import_file(project=project, path=path, format="pandalm").judgements == 2

    def test_errors_give_the_item_line_and_index(self, project, tmp_path):
        path = tmp_path / "panda.json"
        path.write_text(json.dumps([panda(0, (1, 1, 1)), panda(1, (1, 1, 1), response2=[1])], indent=2))
        error = failed(project=project, path=path, format="pandalm").errors[0]
        assert error.field == "[1].response2" and error.line == 12
        assert path.read_text().splitlines()[error.line - 1].strip() == "{"

    def test_duplicate_idx(self, project, tmp_path):
        path = tmp_path / "panda.json"
        path.write_text(json.dumps([panda(0, (1, 1, 1)), panda(0, (2, 2, 2))]))
        error = failed(project=project, path=path, format="pandalm").errors[0]
        assert error.field == "[1].idx" and "duplicate id 'pandalm-0'" in error.message

    def test_trailing_garbage_after_the_list(self, project, tmp_path):
        path = tmp_path / "panda.json"
        path.write_text(json.dumps([panda(0, (1, 1, 1))]) + "\n]\n")
        error = failed(project=project, path=path, format="pandalm").errors[0]
        assert (error.line, error.field) == (2, "json")


# --- MT-Bench -----------------------------------------------------------------------------------


@pytest.fixture
def mt_dir(tmp_path: Path) -> Path:
    write_jsonl(
        tmp_path / "question.jsonl",
        [
            {"question_id": 1, "category": "writing", "turns": ["Write a haiku.", "Another."]},
            {"question_id": 2, "category": "math", "turns": ["2+2?", "3+3?"], "reference": ["4", "6"]},
        ],
    )
    return tmp_path


def mt_vote(q: int, judge: str, a: str, b: str, winner: str) -> dict[str, Any]:
    return {"question_id": q, "judge": judge, "model_a": a, "model_b": b, "winner": winner}


@pytest.mark.django_db
class TestMTBench:
    def test_one_task_per_question_and_unordered_pair(self, ties_project, mt_dir):
        path = write_jsonl(
            mt_dir / "judgments.jsonl",
            [
                mt_vote(1, "expert_0", "gpt-4", "alpaca", "model_a"),
                mt_vote(1, "expert_1", "alpaca", "gpt-4", "model_a"),  # same pair, other order
                mt_vote(1, "expert_2", "gpt-4", "claude", "tie"),
                mt_vote(2, "expert_0", "claude", "gpt-4", "model_b"),
            ],
        )
        summary = import_file(project=ties_project, path=path, format="mt-bench")
        assert (summary.prompts, summary.tasks, summary.judgements, summary.annotators_created) == (2, 3, 4, 3)
        assert summary.responses == 5  # q1: alpaca, claude, gpt-4; q2: claude, gpt-4
        prompt = Prompt.objects.get(external_id="mt-bench-1")
        assert prompt.messages == [{"role": "user", "content": "Write a haiku."}]
        assert Prompt.objects.get(external_id="mt-bench-2").metadata["mt_bench"]["reference"] == "4"

        task = Task.objects.get(prompt=prompt, metadata__models=["alpaca", "gpt-4"])
        alpaca, gpt4 = sorted(task_responses(task), key=lambda r: r.source)
        assert (alpaca.source, gpt4.source) == ("alpaca", "gpt-4")
        assert alpaca.metadata["text_available"] is False and "not included" in alpaca.text
        tiers = dict(task.judgements.values_list("annotator__username", "tiers"))
        assert tiers == {
            "mt-bench-expert_0": [[gpt4.pk], [alpaca.pk]],
            "mt-bench-expert_1": [[alpaca.pk], [gpt4.pk]],
        }
        # Responses are shared by the tasks of one question.
        assert Response.objects.filter(prompt=prompt, source="gpt-4").count() == 1
        assert task.required_annotations == 3 and task.state == TaskState.OPEN

    def test_duplicates_first_last_error(self, ties_project, mt_dir):
        rows = [
            mt_vote(1, "e", "x", "y", "model_a"),
            mt_vote(1, "f", "x", "y", "model_a"),
            mt_vote(1, "e", "y", "x", "model_a"),
        ]
        path = write_jsonl(mt_dir / "j.jsonl", rows)
        error = failed(project=ties_project, path=path, format="mt-bench").errors[0]
        assert (error.line, error.field) == (3, "judge") and "lines 1 and 3" in error.message

        last = import_file(project=ties_project, path=path, format="mt-bench", options={"duplicates": "last"})
        assert last.judgements == 2 and last.skipped[0]["line"] == 1
        x, y = (r.pk for r in sorted(Response.objects.filter(prompt__project=ties_project), key=lambda r: r.source))
        assert Judgement.objects.get(annotator__username="mt-bench-e").tiers == [[y], [x]]

        other = ProjectFactory(allow_ties=True)
        first = import_file(project=other, path=path, format="mt-bench", options={"duplicates": "first"})
        assert first.skipped[0]["line"] == 3
        x, y = (r.pk for r in sorted(Response.objects.filter(prompt__project=other), key=lambda r: r.source))
        assert Judgement.objects.get(task__project=other, annotator__username="mt-bench-e").tiers == [[x], [y]]

    def test_answers_folder_gives_the_texts(self, ties_project, mt_dir):
        answers = mt_dir / "model_answer"
        answers.mkdir()
        for model in ("x", "y"):
            write_jsonl(
                answers / f"{model}.jsonl",
                [
                    {
                        "question_id": 1,
                        "answer_id": f"id-{model}",
                        "model_id": model,
                        "choices": [{"index": 0, "turns": [f"{model} says hi", "t2"]}],
                    }
                ],
            )
        path = write_jsonl(mt_dir / "j.jsonl", [mt_vote(1, "e", "x", "y", "tie")])
        import_file(project=ties_project, path=path, format="mt-bench", options={"answers": str(answers)})
        texts = sorted(Response.objects.values_list("text", "metadata__text_available"))
        assert texts == [("x says hi", True), ("y says hi", True)]

        missing = write_jsonl(mt_dir / "j2.jsonl", [mt_vote(2, "e", "x", "z", "tie")])
        error = failed(
            project=ProjectFactory(allow_ties=True),
            path=missing,
            format="mt-bench",
            options={"answers": "model_answer"},
        ).errors[0]
        assert error.line == 1 and "no answer of x to question 2" in error.message

    def test_questions_file_is_required(self, project, tmp_path):
        path = write_jsonl(tmp_path / "j.jsonl", [mt_vote(1, "e", "x", "y", "model_a")])
        error = failed(project=project, path=path, format="mt-bench").errors[0]
        assert error.field == "options.questions" and "question.jsonl not found" in error.message

    def test_tie_needs_ties(self, project, mt_dir):
        path = write_jsonl(mt_dir / "j.jsonl", [mt_vote(1, "e", "x", "y", "tie")])
        error = failed(project=project, path=path, format="mt-bench").errors[0]
        assert (error.line, error.field) == (1, "winner") and "does not allow ties" in error.message

    def test_errors_in_the_questions_file_name_it(self, project, tmp_path):
        (tmp_path / "qs.jsonl").write_text('{"question_id": 1, "turns": []}\n')
        path = write_jsonl(tmp_path / "j.jsonl", [mt_vote(1, "e", "x", "y", "model_a")])
        exc = failed(project=project, path=path, format="mt-bench", options={"questions": "qs.jsonl"})
        assert str(exc.errors[0]).startswith("qs.jsonl:1: turns: ")


# --- the management command ---------------------------------------------------------------------


@pytest.mark.django_db
class TestCommand:
    def test_imports_and_prints_a_summary(self, project, tmp_path):
        path = write_jsonl(
            tmp_path / "hh.jsonl", [hh(["A", "B"], ["A", "C"]), hh(["A", "B", "C", "D"], ["A", "X", "C", "D2"])]
        )
        out = StringIO()
        call_command(
            "import_data",
            str(path),
            project=project.pk,
            format="hh-rlhf",
            option=["divergent=skip"],
            inline=True,
            stdout=out,
        )
        text = out.getvalue()
        assert "1 tasks" in text and "skipped 1 record(s)" in text and "hh.jsonl:2:" in text
        assert "responses shuffled with seed " in text
        assert Task.objects.count() == 1

    def test_without_inline_the_import_is_a_job_queued_for_a_worker(
        self, project, tmp_path, job_messages, django_capture_on_commit_callbacks
    ):
        path = write_jsonl(tmp_path / "x.jsonl", [{"prompt": "Q", "responses": ["a", "b"]}])
        out = StringIO()
        with django_capture_on_commit_callbacks(execute=True):
            call_command("import_data", str(path), project=project.pk, format="jsonl", stdout=out)
        job = ImportJob.objects.get()
        assert job_messages == [("import", job.pk, "imports")] and job.trigger == "cli"
        assert f"import {job.pk} queued on the imports queue" in out.getvalue() and not Task.objects.exists()
        assert job_messages.run().state == "succeeded" and Task.objects.count() == 1

    def test_failure_lists_every_error_and_exits_non_zero(self, project, tmp_path):
        path = tmp_path / "bad.jsonl"
        path.write_text('nope\n{"prompt": "", "responses": ["a", "b"]}\n')
        err = StringIO()
        with pytest.raises(CommandError, match="2 error"):
            call_command("import_data", str(path), project=project.pk, format="jsonl", inline=True, stderr=err)
        assert err.getvalue().splitlines() == [
            "bad.jsonl:1: json: invalid JSON: Expecting value: line 1 column 1 (char 0)",
            "bad.jsonl:2: prompt: is empty",
        ]
        assert not Task.objects.exists()

    def test_bad_arguments(self, project, tmp_path):
        path = write_jsonl(tmp_path / "x.jsonl", [{"prompt": "Q", "responses": ["a", "b"]}])
        with pytest.raises(CommandError, match="does not exist"):
            call_command("import_data", str(path), project=987654, format="jsonl")
        with pytest.raises(CommandError, match="KEY=VALUE"):
            call_command("import_data", str(path), project=project.pk, format="jsonl", option=["novalue"])
        err = StringIO()
        with pytest.raises(CommandError):
            call_command(
                "import_data", str(path), project=project.pk, format="jsonl", option=["x=1"], inline=True, stderr=err
            )
        assert "x.jsonl: options.x: unknown option" in err.getvalue()

    def test_list_options(self):
        out = StringIO()
        call_command("import_data", "unused", project=1, format="hh-rlhf", list_options=True, stdout=out)
        assert "divergent (prefix|skip|error) [default: prefix]" in out.getvalue()
