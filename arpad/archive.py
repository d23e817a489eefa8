"""Files of the artifact store as one download: a .tar.gz written while it is sent.

A reward-model version's directory and an export snapshot's files are each offered as one
archive. What goes in:

* only regular files inside ``ARTIFACT_ROOT``: a directory that resolves elsewhere is
  refused (:class:`ArchiveRefused`);
* never through a symbolic link: a link is left out, a directory reached through one is
  not entered, and every file is opened with ``O_NOFOLLOW``, so a file swapped for a link
  after the listing is not read either.

The archive is built chunk by chunk (a tar header, the file in 1 MiB reads, gzip through
``zlib``), so neither a file nor the archive is ever whole in memory, and the download
starts at once. The members are listed (and their sizes read) before the response starts:
a missing directory is a refusal with a status, not a cut connection. A file whose size
changes while it is sent stops the stream (a truncated download), never a silently
corrupt archive. The same files give the same bytes (the gzip header carries no time).
"""

from __future__ import annotations

import os
import stat
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.http import StreamingHttpResponse
from django.utils.http import content_disposition_header

CHUNK_BYTES = 1 << 20
# Weights (safetensors) barely compress; the JSON Lines of an export do at any level.
# Level 1 keeps a multi-gigabyte model from costing the web process minutes of CPU.
COMPRESS_LEVEL = 1
CONTENT_TYPE = "application/gzip"


class ArchiveRefused(Exception):
    """The files cannot be archived: gone, or not inside the artifact store. The message says which."""


@dataclass(frozen=True)
class Member:
    """One file of an archive: its name inside it and where it is on disk."""

    name: str
    path: Path
    size: int
    mtime: int


def store_directory(directory: Path) -> Path:
    """``directory`` resolved, when it is an existing directory inside ``ARTIFACT_ROOT`` (not the root itself)."""
    root = Path(settings.ARTIFACT_ROOT).resolve()
    real = Path(directory).resolve()
    if real == root or not real.is_relative_to(root):
        raise ArchiveRefused("the directory is not inside the artifact store")
    if not real.is_dir():
        raise ArchiveRefused("the directory is gone from the artifact store")
    return real


def _member(name: str, path: Path) -> Member | None:
    """A regular file that is not a link, or None."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return Member(name=name, path=path, size=info.st_size, mtime=int(info.st_mtime))


def directory_members(directory: Path) -> list[Member]:
    """Every regular file under ``directory`` (in the store), by relative name; links neither followed nor listed."""
    real = store_directory(directory)
    found: list[Member] = []

    def walk(folder: Path, prefix: str) -> None:
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.is_symlink():
                    continue
                name = f"{prefix}{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    walk(Path(entry.path), f"{name}/")
                    continue
                member = _member(name, Path(entry.path))
                if member is not None:
                    found.append(member)

    walk(real, "")
    return found


def named_members(directory: Path, names: Iterable[str]) -> list[Member]:
    """The files ``names`` (relative, ``/``-separated) of ``directory`` (in the store), in that order.

    Raises :class:`ArchiveRefused` naming the first one that is missing, is not a regular
    file, or would lie outside the directory or behind a link.
    """
    real = store_directory(directory)
    members = []
    for name in names:
        parts = PurePosixPath(name).parts
        if not parts or PurePosixPath(name).is_absolute() or any(p in ("", ".", "..") for p in parts):
            raise ArchiveRefused(f"{name!r} is not a file name inside the directory")
        path = real.joinpath(*parts)
        # No link anywhere between the directory and the file.
        for depth in range(1, len(parts)):
            if real.joinpath(*parts[:depth]).is_symlink():
                raise ArchiveRefused(f"{name} is behind a link")
        member = _member(name, path)
        if member is None:
            raise ArchiveRefused(f"{name} is gone from the artifact store")
        members.append(member)
    return members


def _header(name: str, member: Member) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = member.size
    info.mtime = member.mtime
    info.mode = 0o644
    info.type = tarfile.REGTYPE
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def tar_gz_chunks(members: Iterable[Member], *, folder: str) -> Iterator[bytes]:
    """The .tar.gz of ``members``, each under ``folder/``, as a stream of compressed chunks."""
    gzip = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    written = 0

    def put(data: bytes) -> bytes:
        nonlocal written
        written += len(data)
        return gzip.compress(data)

    for member in members:
        fd = os.open(member.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as handle:
            if os.fstat(handle.fileno()).st_size != member.size or not stat.S_ISREG(os.fstat(fd).st_mode):
                raise RuntimeError(f"{member.name} changed while it was archived")
            out = put(_header(f"{folder}/{member.name}", member))
            if out:
                yield out
            left = member.size
            while left > 0:
                data = handle.read(min(CHUNK_BYTES, left))
                if not data:
                    raise RuntimeError(f"{member.name} shrank while it was archived")
                left -= len(data)
                out = put(data)
                if out:
                    yield out
            padding = -member.size % tarfile.BLOCKSIZE
            if padding:
                out = put(b"\0" * padding)
                if out:
                    yield out
    # Two zero blocks end the archive, padded to a whole record as tar writes it.
    end = b"\0" * (2 * tarfile.BLOCKSIZE)
    end += b"\0" * (-(written + len(end)) % tarfile.RECORDSIZE)
    yield put(end) + gzip.flush()


def archive_response(members: list[Member], *, filename: str) -> StreamingHttpResponse:
    """A streamed attachment ``filename`` (``name.tar.gz``) whose files sit in the folder ``name``."""
    folder = filename.removesuffix(".tar.gz")
    response = StreamingHttpResponse(tar_gz_chunks(members, folder=folder), content_type=CONTENT_TYPE)
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response
