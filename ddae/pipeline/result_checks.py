"""Checks of a result file against its kind's contract (`ddae.pipeline.result_kinds`): values,
provenance against the path, the consistency of a CSV's cells and of a grid CSV with its choice
JSON. Every file is read through `ddae.pipeline.result_reading` (bounded).

CSVs carry no provenance (their writers, `ddae.probing.grid_search.write_grid`, `ddae.alignment` and
`ddae.noise_conditional`, record none, and new columns would change the files the tables read):
what is checkable is checked instead, each file on its own (one ``steps``, each cell once, one
sigma per t, rising with t) and the grid CSV against its choice JSON, whose choice must be the
CSV's best cell (`ddae.probing.grid_search.TIE_BREAK`).

Imports no torch, numpy or pandas: the planning process imports it.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

from ddae.pipeline.result_kinds import (
    CSV_KINDS,
    GRID_ROW,
    INTEGER,
    JSON_KINDS,
    ROWS,
    TEXT,
    Contract,
    Field,
    PathLike,
    ResultPath,
    locate,
    number_text,
)
from ddae.pipeline.result_reading import (
    ResultFileError,
    non_finite_key,
    read_result_record,
    read_result_text,
)

# ---- values --------------------------------------------------------------------------------


class _Where:
    """How a message names the value: a JSON key or a CSV column and row."""

    def __init__(self, path: PathLike, key: str, row: int | None = None, within: str = ""):
        self.text = f"{path}: {within}" + (
            f"key {key!r}" if row is None else f"column {key!r} row {row}"
        )

    def fail(self, problem: str, value: Any) -> None:
        raise ResultFileError(f"{self.text} {problem}, got {value!r}")


def _from_text(value: str, spec: Field) -> Any:
    """A CSV cell as the type its field holds (left as text when it is none)."""
    if spec.type == TEXT:
        return value
    try:
        return (
            int(value)
            if spec.type == INTEGER and re.fullmatch(r"[+-]?\d+", value)
            else (float(value))
        )
    except ValueError:
        return value


def check_value(
    where: _Where, value: Any, spec: Field, upper: Iterable[tuple[int | None, str]] = ()
) -> None:
    """``value`` has ``spec``'s type and range, and is at most each given (bound, reason)."""
    if value is None:
        if not spec.null:
            where.fail(
                f"must be {'a non-empty string' if spec.type == TEXT else 'a ' + spec.type}", value
            )
        return
    if spec.type == TEXT:
        if not (isinstance(value, str) and (value or spec.null)):
            where.fail("must be a non-empty string" + (" or null" if spec.null else ""), value)
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        where.fail(f"must be a{'n integer' if spec.type == INTEGER else ' number'}", value)
    if not math.isfinite(value):
        where.fail("must be finite", value)
    if spec.type == INTEGER and value != int(value):
        where.fail("must be an integer", value)
    low_ok = value > spec.low if spec.above else value >= spec.low
    if not (low_ok and value <= spec.high):
        where.fail(f"must lie in {spec.range_text()}", value)
    for bound, reason in upper:
        if bound is not None and value > bound:
            where.fail(f"must lie in {number_text(max(spec.low, 1))}..{bound} ({reason})", value)


def _bounds(key: str, item: Mapping[str, Any], layers: int | None, levels: int | None):
    """The run-dependent upper bounds of ``key``: layer <= layers; t <= steps and <= levels."""
    if key == "layer":
        return [(layers, "the network's decoder layers")]
    if key == "t":
        steps = item.get("steps")
        steps = steps if isinstance(steps, int) and not isinstance(steps, bool) else None
        return [(steps, "its steps"), (levels, "the run's noise levels")]
    return []


def _check_fields(path, item, fields, *, layers, levels, row=None, within="", required=True):
    for key, spec in fields.items():
        if key not in item:
            if not required:
                continue
            what = f"column {key!r}" if row is not None else f"required key {key!r}"
            raise ResultFileError(f"{path}: {within}{what} is missing")
        if spec.type == ROWS:
            continue
        where = _Where(path, key, row, within)
        check_value(where, item[key], spec, _bounds(key, item, layers, levels))


# ---- JSON ----------------------------------------------------------------------------------


def check_record(
    path: PathLike,
    kind: str,
    record: Any,
    *,
    layers: int | None = None,
    levels: int | None = None,
) -> dict[str, Any]:
    """``record`` (a parsed JSON) against the contract of ``kind``; returns it."""
    contract = _contract(kind, JSON_KINDS, "result kind")
    if not isinstance(record, dict):
        raise ResultFileError(f"{path}: expected a JSON object, got {type(record).__name__}")
    _check_fields(path, record, contract.fields, layers=layers, levels=levels)
    _check_fields(path, record, contract.optional, layers=layers, levels=levels, required=False)
    if "rows" in contract.fields:
        _check_timestep_rows(path, record, layers=layers, levels=levels)
    key = non_finite_key(record)
    if key is not None:  # outside the contract's keys: a history's loss, say
        raise ResultFileError(f"{path}: key {key!r} must be finite (JSON has no NaN)")
    return record


def _check_timestep_rows(path, record, *, layers, levels) -> None:
    rows = record["rows"]
    if not (isinstance(rows, list) and rows):
        raise ResultFileError(f"{path}: key 'rows' must be a non-empty list, got {rows!r}")
    for number, row in enumerate(rows, 1):
        within = f"rows[{number - 1}] "
        if not isinstance(row, dict):
            raise ResultFileError(f"{path}: {within}must be an object, got {row!r}")
        _check_fields(path, row, GRID_ROW, layers=layers, levels=levels, within=within)
        for key in ("t", "steps"):
            if row[key] != record[key]:
                raise ResultFileError(
                    f"{path}: {within}key {key!r} is {row[key]!r}, not the file's {record[key]!r}"
                )
    _check_cells(path, rows, ("layer", "t"))


def check_provenance(path: PathLike, place: ResultPath, record: Mapping[str, Any]) -> None:
    """The ``created_by``, ``checkpoint`` and path-named values ``record`` holds are those of
    the file at ``path`` (a result of another stage, run or epoch copied there is refused)."""
    created_by = record.get("created_by")
    if place.writers and created_by not in place.writers:
        raise ResultFileError(
            f"{path}: key 'created_by' is {created_by!r}, but this file is written by "
            f"{' or '.join(place.writers)} (a result of another stage copied here?)"
        )
    recorded = record.get("checkpoint")
    if place.checkpoint is None:
        if recorded is not None:
            raise ResultFileError(
                f"{path}: key 'checkpoint' is {recorded!r}, but this result is of no checkpoint "
                "(null expected)"
            )
    else:
        expected = PurePosixPath(place.checkpoint).parts
        parts = PurePosixPath(os.path.normpath(str(recorded))).parts if recorded else ()
        if parts[-len(expected) :] != expected:
            raise ResultFileError(
                f"{path}: key 'checkpoint' is {recorded!r}, but this path's result is of "
                f"{place.checkpoint} (a result of another run or epoch copied here?)"
            )
    for key, value in place.named.items():
        if record.get(key) != value:
            raise ResultFileError(
                f"{path}: key {key!r} is {record.get(key)!r}, but the path names {key} {value}"
            )


def checked_record(
    path: PathLike,
    kind: str | None = None,
    *,
    layers: int | None = None,
    levels: int | None = None,
    provenance: bool = True,
) -> dict[str, Any]:
    """The JSON at ``path`` read (bounded) and checked against ``kind``'s contract (by default
    the kind its place tells) and, at its place in the results tree, its provenance."""
    place = locate(path)
    kind = kind or _place_kind(path, place, "json")
    record = check_record(path, kind, read_result_record(path), layers=layers, levels=levels)
    if provenance and place is not None and place.kind == kind:
        check_provenance(path, place, record)
    return record


# ---- CSV -----------------------------------------------------------------------------------


def check_rows(
    path: PathLike,
    kind: str,
    text: str,
    *,
    layers: int | None = None,
    levels: int | None = None,
) -> list[dict[str, Any]]:
    """The rows of CSV ``text`` against ``kind``'s contract, typed (ints, floats, text)."""
    contract = _contract(kind, CSV_KINDS, "CSV kind")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames
        raw = list(reader)
    except csv.Error as error:
        raise ResultFileError(f"{path}: not a readable CSV ({error}); rerun its job") from error
    if not header:
        raise ResultFileError(f"{path}: not a readable CSV (no header); rerun its job")
    missing = [column for column in contract.fields if column not in header]
    if missing:
        raise ResultFileError(
            f"{path}: missing column(s) {missing} of a {kind} CSV (has {list(header)})"
        )
    if not raw:
        raise ResultFileError(f"{path}: {kind} CSV has no rows")
    rows = []
    for number, cells in enumerate(raw, 1):
        if None in cells or any(cells[column] is None for column in header):
            raise ResultFileError(f"{path}: row {number} has {len(header)} columns expected")
        row = {column: _from_text(cells[column], spec) for column, spec in contract.fields.items()}
        _check_fields(path, row, contract.fields, layers=layers, levels=levels, row=number)
        rows.append(row)
    _check_cells(path, rows, tuple(key for key in ("layer", "t") if key in contract.fields))
    return rows


def _check_cells(path: PathLike, rows: Sequence[Mapping[str, Any]], cell: tuple[str, ...]):
    """One ``steps`` per file, each cell once, one sigma per t, rising with t (the schedules'
    sigma grows with the level: `ddae.diffusion`)."""
    steps = {row["steps"] for row in rows}
    if len(steps) > 1:
        raise ResultFileError(f"{path}: column 'steps' holds several values {sorted(steps)}")
    seen, sigmas = set(), {}
    for row in rows:
        key = tuple(row[name] for name in cell)
        if key in seen:
            named = ", ".join(f"{name} {value}" for name, value in zip(cell, key, strict=True))
            raise ResultFileError(f"{path}: the cell ({named}) appears twice")
        seen.add(key)
        if sigmas.setdefault(row["t"], row["sigma"]) != row["sigma"]:
            raise ResultFileError(
                f"{path}: column 'sigma' is {row['sigma']!r} and {sigmas[row['t']]!r} at t "
                f"{row['t']}"
            )
    ordered = sorted(sigmas.items())
    for (t, sigma), (later, next_sigma) in zip(ordered, ordered[1:], strict=False):
        if not next_sigma > sigma:
            raise ResultFileError(
                f"{path}: column 'sigma' is {next_sigma!r} at t {later}, not above {sigma!r} at "
                f"t {t} (sigma rises with t)"
            )


def checked_rows(
    path: PathLike,
    kind: str | None = None,
    *,
    layers: int | None = None,
    levels: int | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """(text, typed rows) of the CSV at ``path`` read (bounded) and checked against ``kind``'s
    contract (by default the kind its place tells)."""
    kind = kind or _place_kind(path, locate(path), "csv")
    text = read_result_text(path)
    return text, check_rows(path, kind, text, layers=layers, levels=levels)


# ---- a grid CSV and its choice -------------------------------------------------------------


def best_cell(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The grid's best cell by `ddae.probing.grid_search.TIE_BREAK`: highest test accuracy;
    ties broken by lowest t, then lowest layer (the rule of
    `ddae.probing.grid_search.write_grid`)."""
    return min(rows, key=lambda row: (-row["test_accuracy"], row["t"], row["layer"]))


def check_grid_choice(
    csv_path: PathLike,
    rows: Sequence[Mapping[str, Any]],
    json_path: PathLike,
    choice: Mapping[str, Any],
) -> None:
    """The choice JSON names the grid CSV's best cell, with its accuracy, steps and sigma."""
    best = best_cell(rows)
    for key in ("layer", "t", "test_accuracy", "steps", "sigma", "layer_name"):
        if key in choice and choice[key] != best[key]:
            raise ResultFileError(
                f"{json_path}: key {key!r} is {choice[key]!r}, but the best cell of {csv_path} "
                f"(layer {best['layer']}, t {best['t']}: {best['test_accuracy']}%) has "
                f"{best[key]!r}: the grid CSV and its choice disagree"
            )


def _contract(kind: str, kinds: Mapping[str, Contract], what: str) -> Contract:
    if kind not in kinds:
        raise ValueError(f"unknown {what} {kind!r} (choose from {sorted(kinds)})")
    return kinds[kind]


def _place_kind(path: PathLike, place: ResultPath | None, form: str) -> str:
    if place is None or place.form != form:
        raise ValueError(f"{path}: not a {form} result file of the pipeline's layout")
    return place.kind
