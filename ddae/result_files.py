"""Validated readers for the pipeline's result files (the inputs of Tables 2–9 and Figures 2–6).

Every table and figure reads its numbers through these functions, so a damaged or foreign file
can never become a table cell or a plotted point. A JSON result must parse, be a mapping, hold
its kind's required keys with the right types, finite numbers in range, and the provenance
fields every ddae writer records (``created_by``, ``checkpoint``; see `ddae.result_writers`,
`ddae.probing`, `ddae.finetune`, `ddae.fid`). A CSV must have its writer's columns
(`ddae.probing.GRID_CSV_COLUMNS`, `ddae.alignment.CSV_COLUMNS`,
`ddae.noise_conditional.CSV_COLUMNS`), at least one row, and finite numbers. Anything else
raises `ResultFileError` naming the path and the problem.

Only a file that does not exist reads as ``None`` ("not run" in tables, "(not run)" in figures);
a file that exists but is wrong is always an error, never "not run".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PathLike = str | Path


class ResultFileError(ValueError):
    """A result file exists but is unreadable or invalid; the message names path and problem."""


# Required keys per JSON kind: key -> (check name, bounds). Bounds are inclusive.
_NUMBER, _INTEGER, _TEXT, _OPTIONAL_TEXT = "number", "integer", "text", "text or null"
PROVENANCE: dict[str, tuple[str, tuple[float, float] | None]] = {
    "created_by": (_TEXT, None),
    "checkpoint": (_OPTIONAL_TEXT, None),  # null for the supervised WRN (no diffusion model)
}
JSON_KINDS: dict[str, dict[str, tuple[str, tuple[float, float] | None]]] = {
    # linear probe, fine-tune, scratch, supervised WRN, DiT probe: accuracy in percent
    "accuracy": {"test_accuracy": (_NUMBER, (0.0, 100.0)), **PROVENANCE},
    "fid": {
        "fid": (_NUMBER, (0.0, math.inf)),
        "extractor": (_TEXT, None),
        "samples": (_INTEGER, (1, math.inf)),
        **PROVENANCE,
    },
    # ddae.probing.pixel_probe: the raw-pixel reference of the miniature's findings
    "pixel_probe": {
        "test_accuracy": (_NUMBER, (0.0, 100.0)),
        "num_classes": (_INTEGER, (2, math.inf)),
        **PROVENANCE,
    },
    # the grid search's chosen (layer, t) beside grid/epoch{E}.csv
    "grid_choice": {
        "layer": (_INTEGER, (1, math.inf)),
        "t": (_INTEGER, (0, math.inf)),
        "steps": (_INTEGER, (1, math.inf)),
        "test_accuracy": (_NUMBER, (0.0, 100.0)),
        **PROVENANCE,
    },
}
# CSV kinds: numeric columns (all must be finite) and text columns.
CSV_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "grid": (("layer", "t", "steps", "sigma", "test_accuracy"), ("layer_name",)),
    "align_uniform": (("layer", "t", "steps", "sigma", "alignment", "uniformity"), ("layer_name",)),
    "noisy": (("t", "steps", "sigma", "test_accuracy"), ()),
}


def _check_value(path: Path, key: str, value: Any, check: str, bounds: Any) -> None:
    def fail(problem: str) -> None:
        raise ResultFileError(f"{path}: key {key!r} {problem}, got {value!r}")

    if check == _TEXT and not (isinstance(value, str) and value):
        fail("must be a non-empty string")
    if check == _OPTIONAL_TEXT and not (value is None or isinstance(value, str)):
        fail("must be a string or null")
    if check in (_NUMBER, _INTEGER):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(f"must be a{'n integer' if check == _INTEGER else ' number'}")
        if not math.isfinite(value):
            fail("must be finite")
        if check == _INTEGER and value != int(value):
            fail("must be an integer")
        low, high = bounds
        if not low <= value <= high:
            fail(f"must lie in [{low}, {high}]")


def _parse_json(path: Path) -> Any:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ResultFileError(f"{path}: cannot read result file ({error})") from error

    def no_constants(name: str) -> float:  # NaN, Infinity: not JSON, Python accepts them
        raise ResultFileError(f"{path}: non-finite number {name} in result file")

    try:
        return json.loads(text, parse_constant=no_constants)
    except json.JSONDecodeError as error:
        raise ResultFileError(f"{path}: not valid JSON ({error}); rerun its job") from error


def _existing(path: PathLike | None, kind: str, kinds: Any, what: str) -> Path | None:
    """``path`` as a Path when the file exists, None when it was never produced (or no path was
    given); an unknown ``kind`` is an error."""
    if kind not in kinds:
        raise ValueError(f"unknown {what} {kind!r} (choose from {sorted(kinds)})")
    if path is None or not Path(path).exists():
        return None
    return Path(path)


def read_result_json(path: PathLike | None, kind: str) -> dict[str, Any] | None:
    """The validated result JSON of ``kind`` (`JSON_KINDS`), or None if the file does not exist."""
    path = _existing(path, kind, JSON_KINDS, "result kind")
    if path is None:
        return None
    record = _parse_json(path)
    if not isinstance(record, dict):
        raise ResultFileError(f"{path}: expected a JSON object, got {type(record).__name__}")
    for key, (check, bounds) in JSON_KINDS[kind].items():
        if key not in record:
            raise ResultFileError(f"{path}: required key {key!r} is missing ({kind} result)")
        _check_value(path, key, record[key], check, bounds)
    return record


def read_result_csv(path: PathLike | None, kind: str) -> pd.DataFrame | None:
    """The validated result CSV of ``kind`` (`CSV_KINDS`), or None if the file does not exist."""
    path = _existing(path, kind, CSV_KINDS, "CSV kind")
    if path is None:
        return None
    numeric, text = CSV_KINDS[kind]
    try:
        frame = pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ResultFileError(f"{path}: not a readable CSV ({error}); rerun its job") from error
    missing = [c for c in (*numeric, *text) if c not in frame.columns]
    if missing:
        raise ResultFileError(
            f"{path}: missing column(s) {missing} of a {kind} CSV (has {list(frame.columns)})"
        )
    if frame.empty:
        raise ResultFileError(f"{path}: {kind} CSV has no rows")
    for column in numeric:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if values.dtype == bool or bad.any():
            row = int(bad.nonzero()[0][0]) if bad.any() else 0
            raise ResultFileError(
                f"{path}: column {column!r} row {row + 1} is {frame[column].iloc[row]!r}, "
                "expected a finite number"
            )
        frame[column] = values
    return frame


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


# The kind of a pipeline result file by where it lies: results/<dataset>/<run>/<stage>/epoch<E>.*
# (each stage's writer), results/<dataset>/<run>/grid/pixels.json (the findings' raw-pixel
# probe) and results/<dataset>/baselines/{wrn.json, noisy_wrn_<vp|ve>.csv}.
STAGE_KINDS = {
    ("fid", ".json"): ("json", "fid"),
    ("linear", ".json"): ("json", "accuracy"),
    ("finetune", ".json"): ("json", "accuracy"),
    ("scratch", ".json"): ("json", "accuracy"),
    ("grid", ".csv"): ("csv", "grid"),
    ("grid", ".json"): ("json", "grid_choice"),
    ("align_uniform", ".csv"): ("csv", "align_uniform"),
    ("noisy", ".csv"): ("csv", "noisy"),
}
NAMED_KINDS = {
    "pixels.json": ("json", "pixel_probe"),
    "scratch.json": ("json", "accuracy"),  # results/<dataset>/<run>/scratch.json
    "wrn.json": ("json", "accuracy"),
    "noisy_wrn_vp.csv": ("csv", "noisy"),
    "noisy_wrn_ve.csv": ("csv", "noisy"),
}


def result_kind(path: PathLike) -> tuple[str, str] | None:
    """("json" | "csv", kind) of a pipeline result path, or None for any other file."""
    path = Path(path)
    if path.name in NAMED_KINDS:
        return NAMED_KINDS[path.name]
    if re.fullmatch(r"epoch\d+", path.stem):
        return STAGE_KINDS.get((path.parent.name, path.suffix))
    return None


def check_existing_results(paths: Sequence[PathLike]) -> None:
    """Validate every existing result file among ``paths`` whose kind its stage folder tells
    (`result_kind`); missing files and other paths are skipped.

    The Snakefile runs this while it plans the tables and figures, so a damaged result file
    stops the run naming the file before Snakemake deletes the tables and figures that read it
    (it removes a job's old outputs before the job starts).
    """
    for path in map(Path, paths):
        kind = result_kind(path)
        if kind is None or not path.exists():
            continue
        form, name = kind
        try:
            (read_result_json if form == "json" else read_result_csv)(path, name)
        except ResultFileError as error:
            raise ResultFileError(
                f"{error}. The tables and figures that read it are kept; delete or restore this "
                "file (Snakemake then reruns the job that writes it) and run again"
            ) from None
