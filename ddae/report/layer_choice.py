"""The label-free layer choice (Sec. 3.3): the layer alignment and uniformity would pick,
beside the grid search's winner.

Per run with both an alignment/uniformity file and a grid search: the label-free layer (see
`label_free_choice` for the criterion), its linear-probe accuracy in the grid, the grid's best
layer at the same timestep, and the grid search's own winner (read from its choice file,
`ddae.report.table9.grid_winner`). Written as a long CSV and a Markdown table.
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
    paper_layer_text,
    save_table,
)
from ddae.report.table9 import grid_winner
from ddae.result_files import read_result_csv


def label_free_choice(align_uniform: pd.DataFrame, uniformity_weight: float = 1.0) -> pd.Series:
    """The layer alignment and uniformity would pick without labels.

    Criterion: the lowest ``alignment + uniformity_weight · uniformity`` (default weight 1).
    Justification: Sec. 3.3 finds the well-probing layers "near lower left corners" of the
    (uniformity, alignment) plane with "good and balanced" values, i.e. both losses low at once;
    the unweighted sum is the combined objective L_align + λ·L_uniform of Wang & Isola [58] with
    their default λ = 1, and it needs no bound or threshold that would have to be tuned on
    labels. Both terms share a scale (alignment in [0, 4], uniformity in [−4, 0]). Ties go to
    the shallower layer (file order).
    """
    score = align_uniform["alignment"] + uniformity_weight * align_uniform["uniformity"]
    return align_uniform.loc[score.idxmin()]


def _accuracy_at(grid: pd.DataFrame | None, layer: int, t: int, steps: int) -> float | None:
    if grid is None:
        return None
    hit = grid[(grid["layer"] == layer) & (grid["t"] == t) & (grid["steps"] == steps)]
    return None if hit.empty else round(float(hit["test_accuracy"].iloc[0]), 2)


def _significant(value: float, digits: int = 4) -> float:
    """`value` to `digits` significant digits: a near-collapsed alignment of 3e-8 must not
    print as 0.0 (rounding to decimal places did)."""
    return float(f"{float(value):.{digits}g}")


def label_free_table(
    runs: Sequence[Mapping[str, Any]], uniformity_weight: float = 1.0
) -> pd.DataFrame:
    """Per run: the label-free layer (see `label_free_choice`) beside the grid-search winner.

    ``runs`` items: ``{"label", "align_uniform": align_uniform/epoch{E}.csv,
    "grid": grid/epoch{E}.csv, "choice": grid/epoch{E}.json (the grid search's winner),
    "paper": Table 9 key or None}``. Accuracies are the grid's
    linear-probe accuracies at the align/uniform file's timestep; "agrees" compares layers.
    """
    reference = load_reference()["table9"]
    rows = []
    for run in runs:
        path = run.get("align_uniform")
        grid_path = run.get("grid")
        metrics = read_result_csv(path, "align_uniform")
        grid = read_result_csv(grid_path, "grid")
        winner = grid_winner(grid_path, run.get("choice"))
        paper = reference.get(run.get("paper") or "")
        if paper is not None and is_miniature(run["paper"], grid_path or path):
            paper = None  # the paper's layer is of another dataset: not set beside ours
        values: dict[str, Any] = {}
        if metrics is not None:
            layers = int(metrics["layer"].max())
            chosen = label_free_choice(metrics, uniformity_weight)
            t, steps = int(chosen["t"]), int(chosen["steps"])
            values["timestep (of the alignment/uniformity file)"] = f"{t}/{steps}"
            values["label-free layer"] = layer_text(chosen["layer"], layers, chosen["layer_name"])
            values["its alignment"] = _significant(chosen["alignment"])
            values["its uniformity"] = _significant(chosen["uniformity"])
            values["its linear probe accuracy (%)"] = _accuracy_at(grid, chosen["layer"], t, steps)
            if grid is not None:
                at_t = grid[(grid["t"] == t) & (grid["steps"] == steps)]
                if not at_t.empty:
                    best = at_t.loc[at_t["test_accuracy"].idxmax()]
                    values["best grid layer at this timestep"] = layer_text(
                        best["layer"], layers, best["layer_name"]
                    )
                    values["its accuracy (%)"] = round(float(best["test_accuracy"]), 2)
                    values["label-free agrees with the grid"] = int(best["layer"]) == int(
                        chosen["layer"]
                    )
        if winner is not None:
            values["grid-search winner (any timestep)"] = (
                layer_text(winner["layer"], winner["layers"], winner["layer_name"])
                + f", t {int(winner['t'])}/{int(winner['steps'])}"
            )
            values["winner accuracy (%)"] = round(float(winner["test_accuracy"]), 2)
        if paper is not None:
            values["paper's layer (Table 9)"] = paper_layer_text(paper)
        for quantity, value in values.items():
            rows.append(
                {
                    "run": run["label"],
                    "quantity": quantity,
                    "value": NOT_RUN if value is None else value,
                }
            )
        if metrics is None:
            rows.append({"run": run["label"], "quantity": "label-free layer", "value": NOT_RUN})
        if winner is None:
            rows.append({"run": run["label"], "quantity": "grid-search winner", "value": NOT_RUN})
    return pd.DataFrame(rows, columns=["run", "quantity", "value"])


def write_label_free_table(
    runs: Sequence[Mapping[str, Any]],
    csv: PathLike,
    md: PathLike,
    uniformity_weight: float = 1.0,
) -> pd.DataFrame:
    frame = label_free_table(runs, uniformity_weight)
    lines = ["| run | quantity | value |", "|---|---|---|"]
    lines += [f"| {r.run} | {r.quantity} | {r.value} |" for r in frame.itertuples()]
    markdown = (
        "Label-free layer choice (Sec. 3.3): the decoder block with the lowest "
        f"alignment + {uniformity_weight:g} × uniformity, beside the linear-probe grid search.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    save_table(frame, markdown, csv, md)
    return frame
