"""Atomic output files: write to a temporary sibling, rename on success.

An interrupted or failed run never leaves a half-written file under the final name; an output
that cannot be written is refused before any work (``check_output``, used by every command).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from caloquant.errors import CaloquantError


def umask_mode(directory: bool = False) -> int:
    """The mode a plain ``open`` or ``mkdir`` would give (0666 / 0777 less the umask):
    ``mkstemp`` and ``mkdtemp`` create private (0600 / 0700) files, which would leave outputs
    unreadable to the rest of a group or a batch system's other users."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix + ".part", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, umask_mode(tmp_path.is_dir()))
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_output(
    path: str | os.PathLike[str] | None, *, folder: bool = False, option: str = "-o"
) -> Path:
    """The one check of an output path, run by every command before any work; creates nothing.

    Refuses an empty path, an existing folder where a file is expected (``folder=False``) or an
    existing file where a folder is expected, anything else that exists and is not a regular
    file or folder (a device, a socket), a parent that is a file, and a parent (or the nearest
    existing ancestor, which the write would create the rest under) that this process cannot
    write into. ``option`` names the flag in the one-line error."""
    text = "" if path is None else os.fspath(path)
    if not str(text).strip():
        raise CaloquantError(f"{option}: empty output path")
    p = Path(text)
    where = f"{option} {text}"
    if folder:
        if p.exists() and not p.is_dir():
            raise CaloquantError(f"{where}: exists and is a file, expected an output folder")
        if p.is_dir() and not _can_write_in(p):
            raise CaloquantError(f"{where}: cannot write the output into this folder")
    else:
        if p.is_dir():
            raise CaloquantError(f"{where}: is a folder, expected an output file name")
        if str(text).endswith(("/", os.sep)):
            raise CaloquantError(f"{where}: names a folder, expected an output file name")
        if p.exists() and not p.is_file():
            raise CaloquantError(
                f"{where}: exists and is not a regular file (refusing to write the output over it)"
            )
    ancestor = p.absolute().parent
    while not ancestor.exists() and not ancestor.is_symlink() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CaloquantError(
            f"{where}: cannot write the output: {ancestor} is a file, not a folder"
        )
    if not _can_write_in(ancestor):
        raise CaloquantError(f"{where}: cannot write the output into folder {ancestor}")
    return p


def _can_write_in(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried: permissions alone say yes to root on a
    read-only file system or in /proc)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        fd, tmp = tempfile.mkstemp(prefix=".caloquant-write-test.", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(tmp)
    return True


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in blocks (checksums of artifacts, shards, reference
    sets)."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def content_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, or of every file of a folder (relative names and contents), so that
    a run is tied to a model's bytes, not to its path (checkpoints and artifact directories)."""
    import hashlib

    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        h.update(str(f.relative_to(p) if f != p else f.name).encode() + b"\0")
        h.update(bytes.fromhex(file_sha256(f)))
    return h.hexdigest()


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def cache_root() -> Path:
    """caloquant's per-user cache: ``$CALOQUANT_CACHE``, else ``$XDG_CACHE_HOME/caloquant``,
    else ``~/.cache/caloquant`` (Geant4 helper and data, reference sets, QAT states)."""
    base = os.environ.get("CALOQUANT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "caloquant",
    )
    return Path(base)
