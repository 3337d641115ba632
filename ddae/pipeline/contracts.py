"""The planning API of the result-file contracts (issue 21): what Snakemake's input functions
call while it plans (`verified_result`), and what `ddae.result_writers` checks before it writes
(`check_written`).

Every kind of result file has one contract (`ddae.pipeline.result_kinds`: keys or columns,
types, ranges; per place in the results tree, the provenance: the ``created_by`` of the stage's
writer and the checkpoint ``results/<dataset>/<run>/checkpoints/epoch<E>.pt`` of the path's run
and epoch). Three ways in, one check (`ddae.pipeline.result_checks`):

* `verified_result`, in the rules' input functions: an existing file that breaks its contract
  stops the run naming file and field, before Snakemake deletes any output (it deletes a job's
  old outputs when the job starts);
* `ddae.result_files` (the tables' and figures' readers) and `ddae.grid_timesteps` (the jobs');
* `check_written` in `ddae.result_writers`: a writer refuses an out-of-contract value.

Every read is bounded (`ddae.pipeline.result_reading`: regular files of at most
`MAX_RESULT_BYTES`). Imports no torch, numpy or pandas: the planning process imports it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ddae.pipeline.result_checks import (
    check_grid_choice,
    check_provenance,
    check_record,
    check_rows,
    checked_record,
    checked_rows,
)
from ddae.pipeline.result_kinds import (
    CONTRACTS,
    CSV_KINDS,
    JSON_KINDS,
    RESULT_FILES,
    PathLike,
    ResultPath,
    locate,
)
from ddae.pipeline.result_reading import (
    MAX_RESULT_BYTES,
    ResultFileError,
    exists,
    parse_json_text,
)

__all__ = [
    "CONTRACTS",
    "CSV_KINDS",
    "JSON_KINDS",
    "KEPT",
    "MAX_RESULT_BYTES",
    "RESULT_FILES",
    "ResultContractError",
    "ResultFileError",
    "check_written",
    "json_text",
    "locate",
    "verified_result",
    "verified_results",
]


class ResultContractError(ResultFileError):
    """An existing result file breaks its contract while Snakemake plans; nothing was deleted."""


# ---- planning ------------------------------------------------------------------------------

KEPT = (
    "Snakemake stopped while planning, before deleting any output: the outputs that read this "
    "file are kept; delete or restore this file (Snakemake then reruns the job that writes it) "
    "and run again"
)


def _verify(path: str, place: ResultPath, layers: int | None, levels: int | None) -> None:
    if place.form == "csv":
        _, rows = checked_rows(path, place.kind, layers=layers, levels=levels)
        choice_path = str(Path(path).with_suffix(".json"))
        if place.kind == "grid" and exists(choice_path):
            choice = checked_record(choice_path, "grid_choice", layers=layers, levels=levels)
            check_grid_choice(path, rows, choice_path, choice)
        return
    record = checked_record(path, place.kind, layers=layers, levels=levels)
    grid_path = str(Path(path).with_suffix(".csv"))
    if place.kind == "grid_choice" and exists(grid_path):
        _, rows = checked_rows(grid_path, "grid", layers=layers, levels=levels)
        check_grid_choice(grid_path, rows, path, record)


def verified_result(path: str, *, layers: int | None = None, levels: int | None = None) -> str:
    """``path`` unchanged, after checking an existing result file against its contract: the
    kind its place tells (`RESULT_FILES`), its provenance there, layer within 1..``layers`` and
    t within 1..``levels`` when given, and a grid CSV against its choice JSON. Nothing at
    ``path`` (the job will make it) and paths of no result kind pass. A breach raises
    `ResultContractError` naming file and field; Snakemake has deleted nothing yet.

    ``layers``: the decoder blocks of the run's network (`ddae.paper_shape.decoder_layer_count`
    of its ``network``); ``levels``: the run's noise levels (its ``evaluation.steps``, Table 9's
    t/steps denominator). ``locate(path).run`` names the run of a path (None for a dataset's
    baselines, which have no run's bounds)."""
    place = locate(path)
    if place is None or not exists(path):
        return path
    try:
        _verify(str(path), place, layers, levels)
    except ResultFileError as error:
        raise ResultContractError(f"{error}. {KEPT}") from None
    return path


def verified_results(
    paths: Iterable[str], *, layers: int | None = None, levels: int | None = None
) -> list[str]:
    """`verified_result` of each of ``paths``, in order."""
    return [verified_result(path, layers=layers, levels=levels) for path in paths]


# ---- writing -------------------------------------------------------------------------------


def check_written(path: PathLike, text: str) -> None:
    """The text a writer is about to put at ``path`` keeps the contract of the path's kind
    (content and provenance; run-dependent bounds are planning's); other paths pass."""
    place = locate(path)
    if place is None:
        return
    if place.form == "csv":
        check_rows(path, place.kind, text)
        return
    record = check_record(path, place.kind, parse_json_text(path, text))
    check_provenance(path, place, record)


def json_text(path: PathLike, record: Mapping[str, Any]) -> str:
    """A result JSON's text (indented, trailing newline); NaN and Infinity are refused for a
    file of a contract kind (its readers refuse them)."""
    try:
        return json.dumps(record, indent=2, allow_nan=locate(path) is None) + "\n"
    except ValueError as error:
        raise ResultFileError(f"{path}: not written, a value is not finite ({error})") from error
