"""Bounded reads of the pipeline's result files (issue 21, case 5): the one function that opens
them, for the planning process and for the jobs alike.

A result path may hold anything a user or a crash left there. Planning must neither hang nor
exhaust memory on it: a FIFO at ``linear/epoch2.json`` used to block ``snakemake -n`` in
``read_text()``, a symlink to ``/dev/zero`` to read until memory ran out. So `read_result_text`
reads only a regular file (``os.stat`` after following symlinks: ``S_ISREG``), opened with
``O_NONBLOCK`` (a FIFO swapped in after the check does not block the open either) and checked
again on the open descriptor, at most `MAX_RESULT_BYTES` bytes of it.

Imports no torch, numpy or pandas: Snakemake's planning process imports this module.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

# The largest result file read. The smoke run's largest is a fine-tuning JSON (2.8 KB, with its
# per-epoch history); a paper-scale grid CSV (20 layers x 50 timesteps) is ~90 KB. 16 MiB
# is over 100 times any of them, and small for a planning process to hold.
MAX_RESULT_BYTES = 16 * 2**20

PathLike = str | os.PathLike


class ResultFileError(ValueError):
    """A result file exists but is unreadable or invalid; the message names path and problem."""


def _kind_of(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _check_regular(path: PathLike, status: os.stat_result) -> None:
    if not stat.S_ISREG(status.st_mode):
        link = f" (a symlink to {os.path.realpath(path)})" if os.path.islink(path) else ""
        raise ResultFileError(
            f"{path}: is {_kind_of(status.st_mode)}{link}, not a regular result file; "
            "delete it (Snakemake then reruns the job that writes it)"
        )
    if status.st_size > MAX_RESULT_BYTES:
        raise ResultFileError(
            f"{path}: {status.st_size} bytes, more than a result file holds "
            f"(MAX_RESULT_BYTES = {MAX_RESULT_BYTES}); delete it and rerun its job"
        )


def read_result_text(path: PathLike) -> str:
    """The text of the regular file at ``path`` (a symlink is followed), at most
    `MAX_RESULT_BYTES` bytes of UTF-8; anything else raises `ResultFileError` naming it."""
    try:
        _check_regular(path, os.stat(path))
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise ResultFileError(f"{path}: cannot read result file ({error})") from error
    with open(descriptor, "rb", closefd=True) as handle:
        _check_regular(path, os.fstat(handle.fileno()))  # the file opened, not the one stat saw
        data = handle.read(MAX_RESULT_BYTES + 1)
    if len(data) > MAX_RESULT_BYTES:  # it grew after the check
        raise ResultFileError(f"{path}: more than MAX_RESULT_BYTES = {MAX_RESULT_BYTES} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError as error:
        raise ResultFileError(f"{path}: cannot read result file ({error})") from error


def parse_json_text(path: PathLike, text: str) -> Any:
    """``text`` parsed as JSON. NaN and Infinity (Python's extensions, not JSON) parse as floats
    here so that the contract names the key that holds one (`non_finite_key`) and refuses it."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise ResultFileError(f"{path}: not valid JSON ({error}); rerun its job") from error


def non_finite_key(value: Any, key: str = "") -> str | None:
    """The key path (``history[1].loss``) of the first NaN or infinity in a parsed JSON."""
    if isinstance(value, float):
        return None if math.isfinite(value) else key
    if isinstance(value, dict):
        named = ((f"{key}.{name}" if key else name, item) for name, item in value.items())
    elif isinstance(value, list):
        named = ((f"{key}[{index}]", item) for index, item in enumerate(value))
    else:
        return None
    for inner, item in named:
        found = non_finite_key(item, inner)
        if found is not None:
            return found
    return None


def read_result_record(path: PathLike) -> dict[str, Any]:
    """The JSON object at ``path``, read through `read_result_text`."""
    record = parse_json_text(path, read_result_text(path))
    if not isinstance(record, dict):
        raise ResultFileError(f"{path}: expected a JSON object, got {type(record).__name__}")
    return record


def exists(path: PathLike | None) -> bool:
    """Whether a result is at ``path``: something other than a dangling symlink (which, as
    nothing, is "not run": its job replaces it)."""
    return path is not None and os.path.exists(Path(path))
