"""Files the pipeline's jobs write: atomic outputs (a job killed mid-write leaves no half file
that Snakemake or a later stage could mistake for a result) and metrics appended line by line."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """Yield a temporary file beside `path`; on success it replaces `path` in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name opened with "x" (not mkstemp, whose files are private 0600): the result gets
    # the usual umask permissions.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with temporary.open("xb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, record: Mapping[str, Any]) -> None:
    """Write a result JSON (indented, trailing newline) atomically."""
    with atomic_output(Path(path)) as handle:
        handle.write((json.dumps(record, indent=2) + "\n").encode())


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
        logging.getLogger(__name__).info("%s: dropped %d line(s) past step %d", path, dropped, step)
        with atomic_output(path) as handle:
            handle.write("".join(kept).encode())
