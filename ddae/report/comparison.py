"""The paper's comparison tables, Tables 2–4 (Sec. 4.2): ours beside the paper's numbers.

Every table is written twice: a long CSV (one row per reproduced quantity: ``measured`` beside
``paper`` and their ``difference``, the style of Table 5, `ddae.report.table5`) and Markdown in
the paper's layout. Paper values — and the other methods' numbers the paper quotes (SimCLR, MAE,
HybViT, DRL/VDRL, SBGC; ``paper_origin = reported``) — come ONLY from the package's reference
file ``ddae/reference/paper_results.yaml``; "ours" comes ONLY from the pipeline's result files
(formats checked by `ddae.result_files`). A result that was not produced is an empty cell and
the words "not run", never a number; rows this pipeline cannot produce (ImageNet-transfer EDM,
DiT until imported) say so in words.

* Table 2 (Sec. 4.2): diffusion-based methods, CIFAR-10 and Tiny-ImageNet, accuracy and FID.
* Table 3 / Table 4 (Sec. 4.2): self-supervised methods on CIFAR-10 / Tiny-ImageNet.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from ddae.report.reference import (
    NOT_RUN,
    PathLike,
    is_number,
    load_reference,
    result_dataset,
    save_table,
    stand_in_dataset,
)
from ddae.result_files import read_result_json

log = logging.getLogger(__name__)

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


# --- result files -------------------------------------------------------------------------------


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


def _other_dataset(section: str, path: PathLike | None) -> str | None:
    """The result's dataset when it is not the section's (e.g. the digits miniature standing in
    for CIFAR-10 in tables.models) or is a synthetic stand-in of it (the paper-shape
    miniature), else None."""
    dataset = result_dataset(path)
    stand_in = stand_in_dataset(path)
    if stand_in:
        return stand_in
    # a section names its dataset first ("CIFAR-10", "CIFAR-10, with ImageNet transfer")
    expected = next((d for name, d in SECTION_DATASETS.items() if section.startswith(name)), None)
    return dataset if dataset and expected and dataset != expected else None


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
        findings = " (the miniature's comparisons are in results/findings.md)"
        where = "" if stand_in_dataset(path) else findings
        return (
            None,
            OTHER_DATASET,
            f"{path} is measured on {other}, not {entry['section']}: not placed in this row nor "
            f"compared with the paper{where}",
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
    csv: PathLike,
    md: PathLike,
) -> pd.DataFrame:
    """Write Table 2, 3 or 4 (``name`` = "table2" | "table3" | "table4") as CSV and Markdown."""
    if name not in TITLES:
        raise ValueError(f"unknown comparison table {name!r} (choose from {sorted(TITLES)})")
    frame = comparison_table(name, results)
    save_table(frame, comparison_markdown(name, frame), csv, md)
    measured = frame[frame["status"] == "measured"]
    log.info("%s: %d measured values", name, len(measured))
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
