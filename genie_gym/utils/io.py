"""Atomic writes and checksums: nothing half-written is ever read back as if it were whole."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, then rename over `path`.

    The file gets the usual permissions (0666 less the umask), not mkstemp's owner-only 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_markdown(path: str | os.PathLike, lines: list[str], echo: bool = True) -> None:
    """A report's markdown lines, written atomically (one trailing newline) and, with `echo`, printed."""
    text = "\n".join(lines)
    atomic_write_bytes(path, (text + "\n").encode())
    if echo:
        print(text)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` through a temporary file and a rename, so a kill never leaves a truncated checkpoint."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_file_header(obj: Any, path: str | os.PathLike, kind_key: str, kind: str, max_version: int,
                      not_this_kind: str, newer: str) -> None:
    """The one header check of genie-gym's files (world models, training checkpoints): `obj` is a dict whose
    `kind_key` names `kind` and whose `format_version` is an int this version reads; else a `CheckpointError`
    (`not_this_kind`, or "`path` has format version V, newer than this genie-gym reads (M); `newer`")."""
    from genie_gym.errors import CheckpointError

    if not isinstance(obj, dict) or obj.get(kind_key) != kind:
        raise CheckpointError(not_this_kind)
    version = obj.get("format_version")
    if not isinstance(version, int) or version > max_version:
        raise CheckpointError(f"{path} has format version {version}, newer than this genie-gym reads "
                              f"({max_version}); {newer}")
