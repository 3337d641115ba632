"""Table 9 (Appendix B): the layer-noise pair our grid search chose beside the paper's.

The chosen (layer, t) is read from the grid search's own choice file (grid/epoch{E}.json, written
by `ddae.probing.grid_search` beside its grid/epoch{E}.csv), never recomputed from the grid: the
tables and figures show the pair the probes were trained at. Written as a long CSV (measured,
paper, matches) and Markdown in the paper's layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ddae.report.reference import (
    NOT_RUN,
    PathLike,
    is_miniature,
    layer_text,
    load_reference,
    paper_in_our_numbering,
    paper_layer_text,
    paper_t_text,
    result_dataset,
    save_table,
    stand_in_dataset,
)
from ddae.result_files import ResultFileError, read_result_csv, read_result_json, require

WINNER_KEYS = ("layer", "layer_name", "t", "steps", "sigma", "test_accuracy")


def read_grid(path: PathLike) -> pd.DataFrame:
    """grid/epoch{E}.csv: layer, layer_name, t, steps, sigma, test_accuracy (validated)."""
    return require(path, read_result_csv, "grid")


def grid_winner(grid: PathLike | None, choice: PathLike | None) -> dict[str, Any] | None:
    """The grid search's chosen (layer, t) as its choice file ``choice`` records it (layer,
    layer_name, t, steps, sigma, test_accuracy), with ``layers``: the number of decoder blocks N
    of its grid CSV ``grid``. None when the grid search has not run (no choice file)."""
    chosen = read_result_json(choice, "grid_choice")
    if chosen is None:
        return None
    missing = [key for key in WINNER_KEYS if key not in chosen]
    if missing:
        raise ResultFileError(f"{choice}: grid choice lacks {missing}; rerun its grid search")
    winner = {key: chosen[key] for key in WINNER_KEYS}
    winner["layers"] = int(read_grid(grid)["layer"].max())
    return winner


def table9(columns: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Long Table 9: per run, the grid search's layer and timestep beside the paper's.

    ``columns`` items: ``{"label", "grid": grid/epoch{E}.csv, "choice": grid/epoch{E}.json,
    "paper": Table 9 key or None}`` (keys as in the reference file: cifar10_ddpm, cifar10_edm,
    tiny_imagenet_ddpm, …); the winner is the choice file's (`grid_winner`).
    The layer "matches" when both k and N agree; the timestep when t and steps agree, after
    the paper's 0-based DiT numbers are put in ours (`paper_in_our_numbering`).
    """
    reference = load_reference()["table9"]
    rows = []
    for column in columns:
        paper = reference.get(column.get("paper") or "", None)
        grid = column.get("grid")
        winner = grid_winner(grid, column.get("choice"))
        if column.get("paper") and paper is None:
            raise ValueError(f"table9: no paper entry {column['paper']!r} in the reference file")
        label = column["label"]
        if paper is not None and is_miniature(column["paper"], grid):
            # a miniature's grid (e.g. digits for cifar10_edm): its own row, no "matches"
            measured_on = stand_in_dataset(grid) or result_dataset(grid)
            label, paper = f"{label}: measured on {measured_on}, not compared", None
        ours = paper and paper_in_our_numbering(paper)
        quantities = [
            (
                "layer",
                winner and layer_text(winner["layer"], winner["layers"], winner["layer_name"]),
                paper and paper_layer_text(paper),
                winner
                and paper
                and (winner["layer"], winner["layers"]) == (ours["layer"], ours["layers"]),
            ),
            (
                "timestep",
                winner and f"{int(winner['t'])}/{int(winner['steps'])}",
                paper and paper_t_text(paper),
                winner and paper and (winner["t"], winner["steps"]) == (ours["t"], ours["steps"]),
            ),
            ("sigma", winner and round(float(winner["sigma"]), 6), None, None),
            (
                "linear probe accuracy (%) in the grid search",
                winner and round(float(winner["test_accuracy"]), 2),
                None,
                None,
            ),
        ]
        for quantity, measured, paper_value, matches in quantities:
            rows.append(
                {
                    "model": label,
                    "quantity": quantity,
                    "measured": NOT_RUN if winner is None else measured,
                    "paper": "" if paper_value is None else paper_value,
                    "matches": "" if matches is None or winner is None else bool(matches),
                }
            )
    return pd.DataFrame(rows, columns=["model", "quantity", "measured", "paper", "matches"])


def table9_markdown(frame: pd.DataFrame) -> str:
    """Table 9 in the paper's layout. The paper's columns appear only when some row is compared
    with a paper pair; a table of miniature rows (digits, stand-ins) says instead why none is."""
    compared = bool(frame["paper"].astype(str).ne("").any())
    header = ["model", "layer (ours)", "timestep (ours)", "σ", "acc. %"]
    if compared:
        header[2:2] = ["layer (paper)"]
        header[4:4] = ["timestep (paper)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, group in frame.groupby("model", sort=False):
        cells = zip(group["measured"], group["paper"], strict=True)
        get = dict(zip(group["quantity"], cells, strict=True))
        row = [model, get["layer"][0], get["timestep"][0], get["sigma"][0]]
        row.append(get["linear probe accuracy (%) in the grid search"][0])
        if compared:
            row[2:2] = [get["layer"][1]]
            row[4:4] = [get["timestep"][1]]
        lines.append("| " + " | ".join(map(str, row)) + " |")
    caption = (
        "Table 9. Adopted layer-noise combinations: our grid search's best linear-probe "
        "(layer, timestep)"
    )
    if compared:
        caption += " beside the paper's"
    else:
        caption += (
            ". No row is compared with the paper's pairs: these grids were not searched on the "
            "paper's datasets (each row says where they were)"
        )
    return (
        f"{caption}. Layers are k/N decoder blocks (module name); timesteps t/steps.\n\n"
        + "\n".join(lines)
        + "\n"
    )


def write_table9(columns: Sequence[Mapping[str, Any]], csv: PathLike, md: PathLike) -> pd.DataFrame:
    frame = table9(columns)
    save_table(frame, table9_markdown(frame), csv, md)
    return frame
