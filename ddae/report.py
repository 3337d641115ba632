"""The paper's comparison tables (Tables 2–4, 9) and the label-free layer choice (Sec. 3.3).

Every table is written twice: a long CSV (one row per reproduced quantity: ``measured`` beside
``paper`` and their ``difference``, the style of `ddae.tables`' Table 5) and Markdown in the
paper's layout. Paper values — and the other methods' numbers the paper quotes (SimCLR, MAE,
HybViT, DRL/VDRL, SBGC; ``paper_origin = reported``) — come ONLY from the package's reference
file ``ddae/reference/paper_results.yaml``; "ours" comes ONLY from the pipeline's result files
(CONTRACT.md formats). A result that was not produced is an empty cell and the words "not run",
never a number; rows this pipeline cannot produce (ImageNet-transfer EDM, DiT until imported)
say so in words.

* Table 2 (Sec. 4.2): diffusion-based methods, CIFAR-10 and Tiny-ImageNet, accuracy and FID.
* Table 3 / Table 4 (Sec. 4.2): self-supervised methods on CIFAR-10 / Tiny-ImageNet.
* Table 9 (Appendix B): the layer-noise pair our grid search found beside the paper's.
* Label-free layer choice (Sec. 3.3): the layer alignment/uniformity pick, beside the grid
  search's winner (see `label_free_choice` for the criterion).

Tables 6–8 (training settings) are in `ddae.report_settings`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ddae.result_files import read_result_csv, read_result_json, require

log = logging.getLogger(__name__)

PathLike = str | Path
NOT_RUN = "not run"
NOT_REPRODUCED = "not reproduced"
NOT_INCEPTION = "measured, not Inception"  # an FID from an offline stand-in extractor
OTHER_DATASET = "other dataset"  # a result of another dataset (the miniature) is never compared
# The paper's table sections and the dataset (results/<dataset>/...) their numbers come from.
SECTION_DATASETS = {"CIFAR-10": "cifar10", "Tiny-ImageNet": "tiny_imagenet"}
COMPARISON_COLUMNS = [
    "section",
    "method",
    "cite",
    "evaluation",
    "quantity",
    "measured",
    "paper",
    "difference",
    "paper_origin",
    "status",
    "source",
    "note",
]
METRIC_KEYS = {"linear", "finetune", "supervised", "fid"}
TITLES = {
    "table2": "Table 2. Comparisons with other diffusion-based representation learning methods "
    "on CIFAR-10 and Tiny-ImageNet.",
    "table3": "Table 3. Comparisons with other self-supervised methods on CIFAR-10.",
    "table4": "Table 4. Comparisons with other self-supervised methods on Tiny-ImageNet.",
}


# --- reference values and result files --------------------------------------------------------


@cache
def load_reference() -> dict[str, Any]:
    """The paper's numbers (package data ``ddae/reference/paper_results.yaml``)."""
    text = (Path(__file__).parent / "reference" / "paper_results.yaml").read_text()
    return yaml.safe_load(text)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def difference(measured: Any, paper: Any) -> float | str:
    """measured − paper (2 decimals) when both are numbers, else an empty cell."""
    if is_number(measured) and is_number(paper):
        return round(float(measured) - float(paper), 2)
    return ""


def read_result(path: PathLike | None, kind: str = "accuracy") -> dict[str, Any] | None:
    """A validated result JSON (`ddae.result_files`), or None when the path is not given or the
    file was never produced; a file that exists but is invalid raises `ResultFileError`."""
    if path is not None and not Path(path).exists():
        log.warning("%s: result file missing; its cells are written as %r", path, NOT_RUN)
    return read_result_json(path, kind)


def result_dataset(path: PathLike | None) -> str | None:
    """The dataset of a pipeline result path ``results/<dataset>/...``, else None."""
    parts = Path(path).parts if path else ()
    return parts[parts.index("results") + 1] if "results" in parts[:-2] else None


def _other_dataset(section: str, path: PathLike | None) -> str | None:
    """The result's dataset when it is not the section's (e.g. the digits miniature standing in
    for CIFAR-10 in tables.models), else None."""
    dataset = result_dataset(path)
    # a section names its dataset first ("CIFAR-10", "CIFAR-10, with ImageNet transfer")
    expected = next((d for name, d in SECTION_DATASETS.items() if section.startswith(name)), None)
    return dataset if dataset and expected and dataset != expected else None


def _miniature(paper_key: str, path: PathLike | None) -> bool:
    """Whether a result stands in for paper model ``paper_key`` (e.g. cifar10_edm) but was
    measured on another dataset (results/digits/...)."""
    dataset = result_dataset(path)
    return bool(dataset) and not paper_key.startswith(f"{dataset}_")


def _metric_value(result: Mapping[str, Any] | None, metric: str) -> float | None:
    if result is None:
        return None
    value = result.get("fid" if metric == "fid" else "test_accuracy")
    return float(value) if is_number(value) else None


# --- Tables 2–4 --------------------------------------------------------------------------------


def _check_results(results: Mapping[str, Mapping[str, PathLike | None]]) -> None:
    models = load_reference()["models"]
    for model, files in results.items():
        if model not in models:
            raise ValueError(f"results: unknown model {model!r} (reference keys: {sorted(models)})")
        unknown = set(files) - METRIC_KEYS
        if unknown:
            raise ValueError(f"results.{model}: unknown result kind(s) {sorted(unknown)}")


def _ours(
    entry: Mapping[str, Any], metric: str, results: Mapping[str, Mapping[str, PathLike | None]]
) -> tuple[float | None, str, str]:
    """(measured value or None, status, note) of one paper row's reproduced quantity."""
    reference = load_reference()
    ours = entry.get("ours")
    if ours is None or (entry.get("not_reproduced") and ours["model"] not in results):
        if entry["paper_origin"] == "reported":
            return None, "reported by the paper (not reproduced)", ""
        reason = reference["not_reproduced"].get(entry.get("not_reproduced", ""), "")
        return None, NOT_REPRODUCED, reason
    files = results.get(ours["model"], {})
    path = files.get(metric)
    other = _other_dataset(entry["section"], path)
    if other is not None:
        return (
            None,
            OTHER_DATASET,
            f"{path} is measured on {other}, not {entry['section']}: not placed in this row nor "
            "compared with the paper (the miniature's comparisons are in results/findings.md)",
        )
    result = read_result(path, "fid" if metric == "fid" else "accuracy")
    value = _metric_value(result, metric)
    if value is None:
        return None, NOT_RUN, "" if path else f"no {metric} result wired for {ours['model']}"
    extractor = result.get("extractor", "inception") if metric == "fid" else "inception"
    if extractor != "inception":
        return (
            value,
            NOT_INCEPTION,
            (
                f"from {path}; FID with the offline {extractor!r} extractor, not Inception: "
                "not comparable with the paper"
            ),
        )
    return value, "measured", f"from {path}"


def comparison_table(
    name: str, results: Mapping[str, Mapping[str, PathLike | None]]
) -> pd.DataFrame:
    """Long form of Table 2, 3 or 4 (``name``): one row per (paper row, quantity).

    ``results`` maps the reference file's model keys (``cifar10_edm``, ``cifar10_wrn``,
    ``tiny_imagenet_edm``, …; see its ``models``) to their result files:
    ``{"linear": linear/epoch{E}.json, "finetune": finetune/epoch{E}.json,
    "fid": fid/epoch{E}.json, "supervised": baselines/wrn.json}``; absent keys are "not run".
    Quantities: ``accuracy (%)`` for every table and ``FID`` for Table 2.
    """
    _check_results(results)
    quantities = [("accuracy", "accuracy (%)")] + ([("fid", "FID")] if name == "table2" else [])
    rows = []
    for raw in load_reference()[name]:
        entry = {**raw, "paper_origin": raw["status"]}
        for key, quantity in quantities:
            paper = entry.get(key, "")
            metric = "fid" if key == "fid" else (entry.get("ours") or {}).get("metric", "")
            if key == "fid" and not is_number(paper):
                measured, status, note = None, "n/a", ""
            else:
                measured, status, note = _ours(entry, metric, results)
            rows.append(
                {
                    "section": entry["section"],
                    "method": entry["method"],
                    "cite": entry.get("cite", ""),
                    "evaluation": entry["evaluation"],
                    "quantity": quantity,
                    "measured": "" if measured is None else round(measured, 2),
                    "paper": "" if paper is None else paper,
                    "difference": ""
                    if measured is None or status == NOT_INCEPTION
                    else difference(measured, paper),
                    "paper_origin": entry["paper_origin"],
                    "status": status,
                    "source": entry.get("source", ""),
                    "note": "; ".join(n for n in (entry.get("note", ""), note) if n),
                }
            )
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def _ours_cell(row: Mapping[str, Any]) -> str:
    if row["measured"] != "" and not pd.isna(row["measured"]):
        marker = "†" if row["status"] == NOT_INCEPTION else ""
        return f"{float(row['measured']):.1f}{marker}"
    if row["paper_origin"] == "reported":
        return "—"
    return {"measured": "", "n/a": "N/A"}.get(row["status"], row["status"].split(" (")[0])


def _delta_cell(row: Mapping[str, Any]) -> str:
    value = row["difference"]
    return "" if value == "" or pd.isna(value) else f"{float(value):+.1f}"


def comparison_markdown(name: str, frame: pd.DataFrame) -> str:
    """The paper's layout with "ours", "paper" and Δ = ours − paper for each number."""
    params = {
        (e["section"], e["method"], e["evaluation"]): e.get("params", "")
        for e in load_reference()[name]
    }
    metrics = list(dict.fromkeys(frame["quantity"]))
    header = ["Method", "Evaluation"]
    if name != "table2":
        header.append("Params (M, paper)")
    for quantity in metrics:
        header += [f"{quantity} ours", f"{quantity} paper", "Δ"]
    header.append("Notes")
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    section = None
    for (sec, method, cite, evaluation), group in frame.groupby(
        ["section", "method", "cite", "evaluation"], sort=False
    ):
        if sec != section:
            section = sec
            lines.append(f"| *on {sec}* |" + " |" * (len(header) - 1))
        label = f"{method} {cite}".strip()
        cells = [label, evaluation]
        if name != "table2":
            cells.append(str(params.get((sec, method, evaluation), "")))
        notes = []
        for quantity in metrics:
            row = group[group["quantity"] == quantity].iloc[0]
            cells += [_ours_cell(row), str(row["paper"]), _delta_cell(row)]
            if row["status"] in (NOT_REPRODUCED, OTHER_DATASET) and row["note"]:
                notes.append(row["note"])
            elif row["paper_origin"] == "reported" and quantity == metrics[0]:
                notes.append(f"reported, {row['source']}")
        cells.append("; ".join(dict.fromkeys(notes)))
        lines.append("| " + " | ".join(cells) + " |")
    footer = (
        "\nours: this pipeline's result files; paper: the paper's value "
        "(ddae/reference/paper_results.yaml); Δ = ours − paper. Other methods' numbers are "
        "as reported by the paper from the cited works and are not reproduced here.\n"
    )
    if (frame["status"] == NOT_INCEPTION).any():
        footer += (
            "† FID computed with an offline stand-in feature extractor, not Inception: not "
            "comparable with the paper's FID (no Δ is given).\n"
        )
    return f"{TITLES[name]}\n\n" + "\n".join(lines) + "\n" + footer


def write_comparison_table(
    name: str,
    results: Mapping[str, Mapping[str, PathLike | None]],
    csv_path: PathLike,
    md_path: PathLike,
) -> pd.DataFrame:
    """Write Table 2, 3 or 4 (``name`` = "table2" | "table3" | "table4") as CSV and Markdown."""
    if name not in TITLES:
        raise ValueError(f"unknown comparison table {name!r} (choose from {sorted(TITLES)})")
    frame = comparison_table(name, results)
    frame.to_csv(csv_path, index=False)
    Path(md_path).write_text(comparison_markdown(name, frame))
    measured = frame[frame["status"] == "measured"]
    log.info("wrote %s and %s: %d measured values", csv_path, md_path, len(measured))
    for _, row in measured.iterrows():
        log.info(
            "%s %s %s: ours %s, paper %s (Δ %s)",
            row["method"],
            row["evaluation"],
            row["quantity"],
            row["measured"],
            row["paper"],
            row["difference"],
        )
    return frame


# --- grid search and alignment/uniformity files ------------------------------------------------


def read_grid(path: PathLike) -> pd.DataFrame:
    """grid/epoch{E}.csv: layer, layer_name, t, steps, sigma, test_accuracy (validated)."""
    return require(path, read_result_csv, "grid")


def grid_winner(path: PathLike) -> dict[str, Any]:
    """The grid search's winning (layer, t): ``epoch{E}.json`` beside the CSV when present (the
    probe's own choice), else the CSV's highest accuracy (first in file order on ties)."""
    path = Path(path)
    grid = read_grid(path)
    beside = path.with_suffix(".json")
    if beside.is_file():
        chosen = require(beside, read_result_json, "grid_choice")
        winner = {key: chosen[key] for key in ("layer", "layer_name", "t", "steps", "sigma")}
        winner["test_accuracy"] = chosen.get("test_accuracy")
    else:
        winner = grid.loc[grid["test_accuracy"].idxmax()].to_dict()
    winner["layers"] = int(grid["layer"].max())
    return winner


def _layer_text(layer: int, layers: int, name: str) -> str:
    return f"{int(layer)}/{int(layers)}" + (f" ({name})" if name else "")


def paper_in_our_numbering(paper: Mapping[str, Any]) -> dict[str, Any]:
    """A Table 9 entry in this project's numbering (layer k = k blocks deep, 1-based t).

    Entries marked ``zero_based`` (DiT: the authors' DiT/linear.py hooks ``blocks[idx]`` as
    ``layer-{idx}`` and noises at 0-based t; `ddae.networks.dit`) are shifted by one.
    """
    shift = 1 if paper.get("zero_based") else 0
    return {**paper, "layer": paper["layer"] + shift, "t": paper["t"] + shift}


def _paper_layer_text(paper: Mapping[str, Any]) -> str:
    text = _layer_text(paper["layer"], paper["layers"], paper["where"])
    if not paper.get("zero_based"):
        return text
    ours = paper_in_our_numbering(paper)
    return f"{text} (0-based: blocks.{paper['layer']} = {ours['layer']}/{paper['layers']} here)"


def _paper_t_text(paper: Mapping[str, Any]) -> str:
    text = f"{paper['t']}/{paper['steps']}"
    if not paper.get("zero_based"):
        return text
    return f"{text} (0-based: {paper_in_our_numbering(paper)['t']}/{paper['steps']} here)"


def table9(columns: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Long Table 9: per run, the grid search's layer and timestep beside the paper's.

    ``columns`` items: ``{"label", "grid": grid/epoch{E}.csv, "paper": Table 9 key or None}``
    (keys as in the reference file: cifar10_ddpm, cifar10_edm, tiny_imagenet_ddpm, …).
    The layer "matches" when both k and N agree; the timestep when t and steps agree, after
    the paper's 0-based DiT numbers are put in ours (`paper_in_our_numbering`).
    """
    reference = load_reference()["table9"]
    rows = []
    for column in columns:
        paper = reference.get(column.get("paper") or "", None)
        grid = column.get("grid")
        winner = grid_winner(grid) if grid and Path(grid).is_file() else None
        if column.get("paper") and paper is None:
            raise ValueError(f"table9: no paper entry {column['paper']!r} in the reference file")
        label = column["label"]
        if paper is not None and _miniature(column["paper"], grid):
            # a miniature's grid (e.g. digits for cifar10_edm): its own row, no "matches"
            label, paper = f"{label}: measured on {result_dataset(grid)}, not compared", None
        ours = paper and paper_in_our_numbering(paper)
        quantities = [
            (
                "layer",
                winner and _layer_text(winner["layer"], winner["layers"], winner["layer_name"]),
                paper and _paper_layer_text(paper),
                winner
                and paper
                and (winner["layer"], winner["layers"]) == (ours["layer"], ours["layers"]),
            ),
            (
                "timestep",
                winner and f"{int(winner['t'])}/{int(winner['steps'])}",
                paper and _paper_t_text(paper),
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
    lines = [
        "| model | layer (ours) | layer (paper) | timestep (ours) | timestep (paper) | σ "
        "| acc. % |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, group in frame.groupby("model", sort=False):
        cells = zip(group["measured"], group["paper"], strict=True)
        get = dict(zip(group["quantity"], cells, strict=True))
        lines.append(
            f"| {model} | {get['layer'][0]} | {get['layer'][1]} | {get['timestep'][0]} | "
            f"{get['timestep'][1]} | {get['sigma'][0]} | "
            f"{get['linear probe accuracy (%) in the grid search'][0]} |"
        )
    return (
        "Table 9. Adopted layer-noise combinations: our grid search's best linear-probe "
        "(layer, timestep) beside the paper's. Layers are k/N decoder blocks (module name); "
        "timesteps t/steps.\n\n" + "\n".join(lines) + "\n"
    )


def write_table9(
    columns: Sequence[Mapping[str, Any]], csv_path: PathLike, md_path: PathLike
) -> pd.DataFrame:
    frame = table9(columns)
    frame.to_csv(csv_path, index=False)
    Path(md_path).write_text(table9_markdown(frame))
    log.info("wrote %s and %s", csv_path, md_path)
    return frame


# --- label-free layer choice (Sec. 3.3) --------------------------------------------------------


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
    return None if hit.empty else float(hit["test_accuracy"].iloc[0])


def label_free_table(
    runs: Sequence[Mapping[str, Any]], uniformity_weight: float = 1.0
) -> pd.DataFrame:
    """Per run: the label-free layer (see `label_free_choice`) beside the grid-search winner.

    ``runs`` items: ``{"label", "align_uniform": align_uniform/epoch{E}.csv,
    "grid": grid/epoch{E}.csv, "paper": Table 9 key or None}``. Accuracies are the grid's
    linear-probe accuracies at the align/uniform file's timestep; "agrees" compares layers.
    """
    reference = load_reference()["table9"]
    rows = []
    for run in runs:
        path = run.get("align_uniform")
        grid_path = run.get("grid")
        metrics = read_result_csv(path, "align_uniform")
        grid = read_result_csv(grid_path, "grid")
        winner = grid_winner(grid_path) if grid is not None else None
        paper = reference.get(run.get("paper") or "")
        if paper is not None and _miniature(run["paper"], grid_path or path):
            paper = None  # the paper's layer is of another dataset: not set beside ours
        values: dict[str, Any] = {}
        if metrics is not None:
            layers = int(metrics["layer"].max())
            chosen = label_free_choice(metrics, uniformity_weight)
            t, steps = int(chosen["t"]), int(chosen["steps"])
            values["timestep (of the alignment/uniformity file)"] = f"{t}/{steps}"
            values["label-free layer"] = _layer_text(chosen["layer"], layers, chosen["layer_name"])
            values["its alignment"] = round(float(chosen["alignment"]), 4)
            values["its uniformity"] = round(float(chosen["uniformity"]), 4)
            values["its linear probe accuracy (%)"] = _accuracy_at(grid, chosen["layer"], t, steps)
            if grid is not None:
                at_t = grid[(grid["t"] == t) & (grid["steps"] == steps)]
                if not at_t.empty:
                    best = at_t.loc[at_t["test_accuracy"].idxmax()]
                    values["best grid layer at this timestep"] = _layer_text(
                        best["layer"], layers, best["layer_name"]
                    )
                    values["its accuracy (%)"] = float(best["test_accuracy"])
                    values["label-free agrees with the grid"] = int(best["layer"]) == int(
                        chosen["layer"]
                    )
        if winner is not None:
            values["grid-search winner (any timestep)"] = (
                _layer_text(winner["layer"], winner["layers"], winner["layer_name"])
                + f", t {int(winner['t'])}/{int(winner['steps'])}"
            )
            values["winner accuracy (%)"] = float(winner["test_accuracy"])
        if paper is not None:
            values["paper's layer (Table 9)"] = _paper_layer_text(paper)
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
    csv_path: PathLike,
    md_path: PathLike,
    uniformity_weight: float = 1.0,
) -> pd.DataFrame:
    frame = label_free_table(runs, uniformity_weight)
    frame.to_csv(csv_path, index=False)
    lines = ["| run | quantity | value |", "|---|---|---|"]
    lines += [f"| {r.run} | {r.quantity} | {r.value} |" for r in frame.itertuples()]
    Path(md_path).write_text(
        "Label-free layer choice (Sec. 3.3): the decoder block with the lowest "
        f"alignment + {uniformity_weight:g} × uniformity, beside the linear-probe grid search.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    log.info("wrote %s and %s", csv_path, md_path)
    return frame
