"""arpad.archive: whole directories of the artifact store as a streamed .tar.gz, never through a link."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from arpad import archive
from arpad.archive import ArchiveRefused, directory_members, named_members, tar_gz_chunks


@pytest.fixture
def store(settings, tmp_path) -> Path:
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.ARTIFACT_ROOT.mkdir()
    return settings.ARTIFACT_ROOT


def unpack(chunks) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks)), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_a_directory_comes_back_whole_under_its_folder(store):
    model = store / "rewardmodels" / "run-1" / "model"
    (model / "tokenizer").mkdir(parents=True)
    (model / "config.json").write_text('{"a": 1}')
    (model / "tokenizer" / "vocab.txt").write_text("héllo\n")
    (model / "empty.bin").write_bytes(b"")
    members = directory_members(model)
    assert [m.name for m in members] == ["config.json", "empty.bin", "tokenizer/vocab.txt"]
    files = unpack(tar_gz_chunks(members, folder="reward-model-1-v1"))
    assert files == {
        "reward-model-1-v1/config.json": b'{"a": 1}',
        "reward-model-1-v1/empty.bin": b"",
        "reward-model-1-v1/tokenizer/vocab.txt": "héllo\n".encode(),
    }
    # The same files give the same bytes (a re-download can be checked against a hash).
    assert b"".join(tar_gz_chunks(members, folder="x")) == b"".join(tar_gz_chunks(members, folder="x"))


def test_a_large_file_is_streamed_in_chunks_never_whole(store, monkeypatch):
    monkeypatch.setattr(archive, "CHUNK_BYTES", 64 * 1024)
    big = store / "m" / "model.safetensors"
    big.parent.mkdir()
    payload = os.urandom(3 * 1024 * 1024)  # random bytes: gzip cannot shrink them
    big.write_bytes(payload)
    chunks = []
    for chunk in tar_gz_chunks(directory_members(big.parent), folder="m"):
        assert len(chunk) < 512 * 1024  # nothing near the whole file at once
        chunks.append(chunk)
    assert len(chunks) > 10
    assert unpack(chunks) == {"m/model.safetensors": payload}


def test_links_are_neither_followed_nor_listed(store, tmp_path):
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "passwords.txt").write_text("hunter2")
    model = store / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "leak.txt").symlink_to(secret / "passwords.txt")
    (model / "leakdir").symlink_to(secret, target_is_directory=True)
    (model / "inside.json").symlink_to(model / "config.json")  # even a link inside the store
    assert [m.name for m in directory_members(model)] == ["config.json"]
    assert "hunter2" not in str(unpack(tar_gz_chunks(directory_members(model), folder="m")))
    for name in ("leak.txt", "leakdir/passwords.txt", "inside.json", "../outside/passwords.txt", "/etc/passwd"):
        with pytest.raises(ArchiveRefused):
            named_members(model, [name])


def test_a_file_swapped_for_a_link_after_the_listing_is_not_read(store, tmp_path):
    (tmp_path / "secret").write_text("hunter2")
    model = store / "m"
    model.mkdir()
    (model / "a.json").write_text("{}")
    members = directory_members(model)
    (model / "a.json").unlink()
    (model / "a.json").symlink_to(tmp_path / "secret")
    with pytest.raises(OSError):
        b"".join(tar_gz_chunks(members, folder="m"))


def test_directories_outside_the_store_or_gone_are_refused(store, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "config.json").write_text("{}")
    for directory in (elsewhere, store, store / "gone", store / ".." / "elsewhere"):
        with pytest.raises(ArchiveRefused):
            directory_members(directory)
    # A link from the store to elsewhere leads outside: refused as well.
    (store / "link").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(ArchiveRefused):
        directory_members(store / "link")
    (store / "m").mkdir()
    with pytest.raises(ArchiveRefused, match="missing.json is gone"):
        named_members(store / "m", ["missing.json"])
