"""Tables 6–8 (Appendix A): the training settings actually used, beside the paper's.

* Table 6: linear probing; Table 7: fine-tuning; Table 8: supervised training from scratch.

Each column is one run's settings as the workflow passed them to the probe / fine-tune /
scratch job (its config mapping, nested or flat). Every setting in that mapping is listed; the
ones the paper's tables state (optimizer, learning rate, schedule, batch size, epochs, warm-up,
flip, crop padding) are matched by name and compared with the paper's value from
``ddae/reference/paper_results.yaml``. The paper gives the batch size per GPU × GPUs; the
config's ``batch_size`` is the global batch, so it is compared with the product.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ddae.report import is_number, load_reference

log = logging.getLogger(__name__)

TITLES = {
    "table6": "Table 6. Linear probing setting",
    "table7": "Table 7. Fine-tuning setting",
    "table8": "Table 8. Setting for training supervised models from scratch",
}
# paper quantity -> config key names it may have in a run's settings (last dotted component)
ALIASES = {
    "optimizer": ("optimizer",),
    "lr": ("lr", "learning_rate", "base_lr"),
    "schedule": ("schedule", "lr_schedule", "scheduler"),
    "batch_size": ("batch_size", "global_batch_size"),
    "epochs": ("epochs",),
    "warmup_epochs": ("warmup_epochs",),
    "hflip": ("hflip", "flip"),
    "crop_padding": ("crop_padding", "padding"),
}
QUANTITY_NAMES = {
    "optimizer": "optimizer",
    "lr": "base learning rate",
    "schedule": "learning rate schedule",
    "batch_size": "batch size (global)",
    "epochs": "training epochs",
    "warmup_epochs": "warmup epochs",
    "hflip": "RandomHorizontalFlip",
    "crop_padding": "RandomCrop padding",
}


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = ", ".join(str(v) for v in value)
        else:
            flat[name] = value
    return flat


def paper_settings(table: str, column: Mapping[str, Any]) -> dict[str, Any]:
    """The paper's settings for one column: ``column["paper"]`` is a model key (cifar10_edm, …)
    for Tables 6–7, or "ddae" / "wrn" for Table 8."""
    reference = load_reference()[table]
    key = column.get("paper")
    if not key:
        return {}
    values = dict(reference["common"])
    if table == "table6":
        values["epochs"] = reference["epochs"][key]
    elif table == "table7":
        family = key.rsplit("_", 1)[-1]
        values["epochs"] = reference["epochs"][key]
        values["lr"] = reference["lr"][family]
        values["batch_size"] = reference["batch_size"][family] * reference["gpus"][family]
    else:
        values["optimizer"] = reference["optimizer"][key]
        values["lr"] = reference["lr"][key]
    if "gpus" in values:  # Tables 6 and 8 state one per-GPU batch for every column
        values["batch_size"] = values.pop("batch_size") * values.pop("gpus")
    return values


def _same(measured: Any, paper: Any) -> bool:
    if is_number(measured) and is_number(paper):
        return math.isclose(float(measured), float(paper), rel_tol=1e-9)
    if isinstance(paper, bool) or isinstance(measured, bool):
        return bool(measured) == bool(paper) if isinstance(measured, bool) else False
    ours, theirs = str(measured).strip().lower(), str(paper).strip().lower()
    return bool(ours) and (theirs.startswith(ours) or ours.startswith(theirs))


def settings_table(table: str, columns: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Long form: one row per (column, setting) with measured, paper and matches.

    ``columns`` items: ``{"label": str, "config": mapping used by the job, "paper": key}``.
    Paper quantities the config does not contain appear with measured "not set".
    """
    if table not in TITLES:
        raise ValueError(f"unknown settings table {table!r} (choose from {sorted(TITLES)})")
    rows = []
    for column in columns:
        flat = _flatten(column.get("config") or {})
        paper = paper_settings(table, column)
        used = set()
        for quantity, names in ALIASES.items():
            key = next((k for k in flat if k.rsplit(".", 1)[-1] in names), None)
            if key is None and quantity not in paper:
                continue
            measured = flat[key] if key is not None else "not set"
            used.add(key)
            reference = paper.get(quantity)
            rows.append(
                {
                    "model": column["label"],
                    "quantity": QUANTITY_NAMES[quantity] + (f" [{key}]" if key else ""),
                    "measured": measured,
                    "paper": "" if reference is None else reference,
                    "matches": ""
                    if reference is None or key is None
                    else _same(measured, reference),
                }
            )
        for key, value in flat.items():
            if key not in used:
                rows.append(
                    {
                        "model": column["label"],
                        "quantity": key,
                        "measured": value,
                        "paper": "",
                        "matches": "",
                    }
                )
    return pd.DataFrame(rows, columns=["model", "quantity", "measured", "paper", "matches"])


def settings_markdown(table: str, frame: pd.DataFrame) -> str:
    lines = ["| run | setting | used | paper | matches |", "|---|---|---|---|---|"]
    for row in frame.itertuples():
        matches = {True: "yes", False: "**no**"}.get(row.matches, "")
        lines.append(f"| {row.model} | {row.quantity} | {row.measured} | {row.paper} | {matches} |")
    return (
        f"{TITLES[table]}: the settings this pipeline used, beside the paper's (batch size is "
        "global: the paper's per-GPU batch × GPUs).\n\n" + "\n".join(lines) + "\n"
    )


def write_settings_table(
    table: str, columns: Sequence[Mapping[str, Any]], csv_path: str | Path, md_path: str | Path
) -> pd.DataFrame:
    """Write Table 6, 7 or 8 (``table`` = "table6" | "table7" | "table8")."""
    frame = settings_table(table, columns)
    frame.to_csv(csv_path, index=False)
    Path(md_path).write_text(settings_markdown(table, frame))
    differ = frame[frame["matches"] == False]  # noqa: E712 ("" means no paper value)
    for row in differ.itertuples():
        log.warning("%s %s: %s, paper %s", row.model, row.quantity, row.measured, row.paper)
    log.info("wrote %s and %s; %d settings differ from the paper", csv_path, md_path, len(differ))
    return frame
