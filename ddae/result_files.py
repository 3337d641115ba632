"""Validated readers for the pipeline's result files (the inputs of Tables 2–9 and Figures 2–6).

Every table and figure reads its numbers through these functions, so a damaged or foreign file
can never become a table cell or a plotted point. Each file is read
bounded and checked against its kind's contract (`ddae.pipeline.contracts`: keys or columns,
types, ranges, the provenance every ddae writer records); anything else raises
`ResultFileError` naming the path and the problem.

Only a file that does not exist reads as ``None`` ("not run" in tables, "(not run)" in figures);
a file that exists but is wrong is always an error, never "not run".
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddae.pipeline.contracts import (
    CSV_KINDS,
    JSON_KINDS,
    ResultContractError,
    checked_record,
    checked_rows,
    locate,
    verified_results,
)
from ddae.pipeline.result_reading import ResultFileError, exists

if TYPE_CHECKING:  # pandas is imported by the CSV reader: planning checks files without it
    import pandas as pd

__all__ = [
    "CSV_KINDS",
    "JSON_KINDS",
    "ResultContractError",
    "ResultFileError",
    "check_existing_results",
    "read_grid_choice",
    "read_result_csv",
    "read_result_json",
    "require",
    "result_kind",
]
PathLike = str | Path


def _existing(path: PathLike | None, kind: str, kinds: Any, what: str) -> Path | None:
    """``path`` as a Path when the file exists, None when it was never produced (or no path was
    given); an unknown ``kind`` is an error."""
    if kind not in kinds:
        raise ValueError(f"unknown {what} {kind!r} (choose from {sorted(kinds)})")
    return Path(path) if exists(path) else None


def read_result_json(path: PathLike | None, kind: str) -> dict[str, Any] | None:
    """The result JSON of ``kind`` (`JSON_KINDS`) checked against its contract, or None if the
    file does not exist. Provenance against the path is planning's (`check_existing_results`,
    `ddae.pipeline.contracts.verified_result`): the tables also read synthetic results."""
    path = _existing(path, kind, JSON_KINDS, "result kind")
    return None if path is None else checked_record(path, kind, provenance=False)


def read_result_csv(path: PathLike | None, kind: str) -> pd.DataFrame | None:
    """The result CSV of ``kind`` (`CSV_KINDS`) checked against its contract, or None if the
    file does not exist."""
    path = _existing(path, kind, CSV_KINDS, "CSV kind")
    if path is None:
        return None
    import pandas as pd

    text, _ = checked_rows(path, kind)
    return pd.read_csv(io.StringIO(text))


def require(path: PathLike, reader: Any, kind: str) -> Any:
    """``reader(path, kind)`` for an input that must exist (a job input, not a table cell)."""
    value = reader(path, kind)
    if value is None:
        raise ResultFileError(f"{path}: result file does not exist")
    return value


def read_grid_choice(paths: Sequence[PathLike]) -> dict[str, Any]:
    """The grid search's chosen (layer, t, steps) JSON; exactly one path, which must exist."""
    if len(paths) != 1:
        raise ResultFileError(f"expected one grid-search choice file, got {list(paths)}")
    return require(paths[0], read_result_json, "grid_choice")


def result_kind(path: PathLike) -> tuple[str, str] | None:
    """("json" | "csv", kind) of a pipeline result path by its place under results/<dataset>/
    (`ddae.pipeline.contracts.RESULT_FILES`), or None for any other file."""
    place = locate(path)
    return None if place is None else (place.form, place.kind)


def check_existing_results(paths: Sequence[PathLike]) -> None:
    """Check every existing result file among ``paths`` against the contract its place tells
    (`ddae.pipeline.contracts.verified_result`: content, provenance, a grid CSV against its
    choice); missing files and other paths are skipped.

    The Snakefile runs this while it plans the tables and figures, so a damaged result file
    stops the run naming the file before Snakemake deletes the tables and figures that read it
    (it removes a job's old outputs before the job starts).
    """
    verified_results([str(path) for path in paths])
