"""Files the pipeline's jobs write: atomic outputs (a job killed mid-write leaves no half file
that Snakemake or a later stage could mistake for a result) and metrics appended line by line.

A result of a contract kind (`ddae.pipeline.contracts`) is checked against its contract before
anything is written: a writer refuses an out-of-contract value, naming the field.

A writer works in a temporary sibling of its target, ``.<name>.<pid>.<token>.tmp`` (a file here,
a folder in `ddae.cache_dirs.staged_dir`), and holds an ``flock`` on ``.<name>.<pid>.<token>.lock``
while it does (`claimed_temporary`). A writer killed mid-write (kill -9, a walltime) leaves both
behind; the kernel drops its lock, so the next writer of the same target finds the lock free and
deletes them first (`remove_stale_temporaries`), while a live writer's temporary stays untouched.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import glob
import io
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from ddae.pipeline.contracts import check_written, json_text

log = logging.getLogger(__name__)


def _writer_stems(path: Path) -> list[Path]:
    """``.<name>.<pid>.<token>`` of every temporary or writer lock of ``path`` beside it (not of
    another target whose name starts with ``path``'s: ``a.b``'s are not ``a``'s)."""
    prefix = f".{path.name}."
    own = re.compile(re.escape(prefix) + r"\d+\.[0-9a-f]{8}(?=\.(?:tmp|lock)$)")
    matches = (own.match(found.name) for found in path.parent.glob(glob.escape(prefix) + "*"))
    return sorted({path.with_name(match.group()) for match in matches if match})


def _size(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
    return path.stat().st_size if path.exists() else 0


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Delete the temporaries (and lock files) that writers of ``path`` killed mid-write left
    beside it; return the temporaries removed. One whose lock a live writer holds stays; one
    without a lock file (an older writer's) is stale."""
    path = Path(path)
    removed = []
    for stem in _writer_stems(path):
        temporary, lock = Path(f"{stem}.tmp"), Path(f"{stem}.lock")
        try:
            holder = lock.open("r+")  # writable: an exclusive lock over NFS needs it
        except FileNotFoundError:
            holder = None
        with holder or contextlib.nullcontext():
            if holder is not None:
                try:
                    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:  # BlockingIOError: a live writer; else no locks here: keep it
                    continue
            if temporary.exists() or temporary.is_symlink():
                size = _size(temporary)
                if temporary.is_dir() and not temporary.is_symlink():
                    shutil.rmtree(temporary, ignore_errors=True)
                else:
                    temporary.unlink(missing_ok=True)
                log.info("removed %s (%d bytes) left by a writer killed mid-write", temporary, size)
                removed.append(temporary)
            lock.unlink(missing_ok=True)
    return removed


@contextlib.contextmanager
def claimed_temporary(path: Path) -> Iterator[Path]:
    """A fresh temporary name beside ``path`` (not yet created: the caller makes a file or a
    folder there), claimed by this process's lock for the duration of the block, after the
    stale temporaries of ``path`` are removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    while True:
        stem = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        lock = Path(f"{stem}.lock")
        try:
            holder = lock.open("x")
        except FileNotFoundError:  # a finished job removed the emptied folder (remove_cache_dir)
            path.parent.mkdir(parents=True, exist_ok=True)
            continue
        with contextlib.suppress(OSError):  # no locks on this file system: nothing is cleaned
            fcntl.flock(holder, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(holder.fileno()), lock.stat()):
                break
        except FileNotFoundError:
            pass  # a cleaner took the new lock file for a dead writer's before we locked it
        holder.close()
    try:
        yield Path(f"{stem}.tmp")
    finally:
        lock.unlink(missing_ok=True)
        holder.close()


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """Yield a temporary file beside `path`; on success it replaces `path` in one rename."""
    with claimed_temporary(path) as temporary:
        try:
            # opened with "x" (not mkstemp, whose files are private 0600): the result gets the
            # usual umask permissions
            with temporary.open("xb") as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


def write_json(path: str | Path, record: Mapping[str, Any]) -> None:
    """Write a result JSON (indented, trailing newline) atomically. A file of a contract kind
    (`ddae.pipeline.contracts`) is checked first: an out-of-contract value fails the job naming
    the field, and nothing is written."""
    text = json_text(path, record)
    check_written(path, text)
    with atomic_output(Path(path)) as handle:
        handle.write(text.encode())


def write_text(path: str | Path, text: str) -> None:
    """Write a text result (a Markdown table, say) atomically."""
    with atomic_output(Path(path)) as handle:
        handle.write(text.encode())


def write_csv(path: str | Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Write a result CSV atomically: a header of `columns`, then each row's values of them."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(columns))
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row[key] for key in columns})
    check_written(path, text.getvalue())  # a contract kind's values, before anything is written
    write_text(path, text.getvalue())


def append_jsonl(path: str | Path, record: Mapping[str, Any]) -> None:
    """Append one metrics record as a JSON line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def drop_metrics_after(path: str | Path | None, step: int) -> None:
    """Remove metrics lines past ``step`` (and a half-written last line) before training resumes
    at ``step``, so that every step appears in the run's metrics.jsonl at most once."""
    if path is None or not Path(path).is_file():
        return
    path = Path(path)
    lines = path.read_text().splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
        except (ValueError, KeyError, TypeError):
            pass  # the torn line of a killed writer
    if kept != lines:
        dropped = len(lines) - len(kept)
        log.info("%s: dropped %d line(s) past step %d", path, dropped, step)
        with atomic_output(path) as handle:
            handle.write("".join(kept).encode())
