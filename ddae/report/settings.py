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

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ddae.classifier_training import ClassifierTrainingConfig
from ddae.latents import LatentCacheConfig
from ddae.report.reference import PathLike, is_number, load_reference, save_table
from ddae.settings.probes import LinearProbeConfig

log = logging.getLogger(__name__)

# What a job uses for a setting that its config mapping leaves out: its config class's default
# (ddae.settings.probes.LinearProbeConfig for Table 6, ddae.settings.classifiers'
# ClassifierTrainingConfig for Tables 7-8; Table 6's optimizer is LinearProbeConfig.solver), or
# what the code always does (no setting: the cosine schedules of ProbeConfig.lr_at_epoch and
# classifier_training.lr_at_epoch).
CONFIG_CLASSES = {
    "table6": LinearProbeConfig,
    "table7": ClassifierTrainingConfig,
    "table8": ClassifierTrainingConfig,
}
FIXED_IN_CODE = {
    "table6": {"schedule": "cosine decay"},
    "table7": {"schedule": "cosine decay"},
    "table8": {"schedule": "cosine decay"},
}
# Table 6 under LinearProbeConfig.solver "lbfgs" (not in the paper): no lr and no schedule
SOLVER_UNUSED = {"lbfgs": {"lr": "none (L-BFGS line search)", "schedule": "none (L-BFGS)"}}
# DiT jobs read augmented latents: flip and crop are the latent cache's (LatentCacheConfig)
LATENT_AUGMENTATION = ("hflip", "crop_padding")

TITLES = {
    "table6": "Table 6. Linear probing setting",
    "table7": "Table 7. Fine-tuning setting",
    "table8": "Table 8. Setting for training supervised models from scratch",
}
# paper quantity -> config key names it may have in a run's settings (last dotted component)
ALIASES = {
    "optimizer": ("optimizer", "solver"),  # solver: the final linear probe's (Table 6)
    "lr": ("lr", "learning_rate", "base_lr"),  # base_lr: probe JSONs from before ddae.learning_rate
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


def _default(cls: type, quantity: str) -> tuple[str, Any] | None:
    """(field name, default) of the config class field that holds ``quantity``, if any."""
    for field in dataclasses.fields(cls):
        if field.name in ALIASES[quantity] and field.default is not dataclasses.MISSING:
            return field.name, field.default
    return None


def effective_setting(
    table: str, quantity: str, augmentation: Mapping[str, Any] | None
) -> tuple[str, Any] | None:
    """(where it comes from, value) of a paper quantity the job's config leaves out: the config
    class's default, what the code always does, or (DiT, ``augmentation`` = its latents config)
    the latent cache's flip and crop; None if the code has no such setting."""
    if augmentation is not None and quantity in LATENT_AUGMENTATION:
        if quantity in augmentation:
            return f"latents.{quantity}", augmentation[quantity]
        name, value = _default(LatentCacheConfig, quantity)
        return f"latents.{name}, code default", value
    if quantity in FIXED_IN_CODE[table]:
        return "fixed in the code", FIXED_IN_CODE[table][quantity]
    found = _default(CONFIG_CLASSES[table], quantity)
    return None if found is None else (f"{found[0]}, code default", found[1])


def settings_table(table: str, columns: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Long form: one row per (column, setting) with measured, paper and matches.

    ``columns`` items: ``{"label": str, "config": mapping used by the job, "paper": key}`` and,
    for DiT columns, ``"augmentation"``: the latents config (flip and crop happen there).
    Paper quantities the config does not contain show the value the job effectively uses
    (`effective_setting`), or "not set" where the code has none.
    """
    if table not in TITLES:
        raise ValueError(f"unknown settings table {table!r} (choose from {sorted(TITLES)})")
    rows = []
    for column in columns:
        flat = _flatten(column.get("config") or {})
        paper = paper_settings(table, column)
        solver = next((v for k, v in flat.items() if k.rsplit(".", 1)[-1] == "solver"), None)
        unused = SOLVER_UNUSED.get(solver, {}) if table == "table6" else {}
        used = set()
        for quantity, names in ALIASES.items():
            key = next((k for k in flat if k.rsplit(".", 1)[-1] in names), None)
            if key is None and quantity not in paper:
                continue
            used.add(key)
            augmentation = column.get("augmentation")
            if augmentation is not None and quantity in LATENT_AUGMENTATION:
                key = None  # the probe/fine-tune's own flip and crop are unused on latents
            effective = None if key else effective_setting(table, quantity, augmentation)
            if quantity in unused:
                source, measured = f"solver {solver}", unused[quantity]
            elif key:
                source, measured = key, flat[key]
            elif effective:
                source, measured = effective
            else:
                source, measured = "", "not set"
            reference = paper.get(quantity)
            rows.append(
                {
                    "model": column["label"],
                    "quantity": QUANTITY_NAMES[quantity] + (f" [{source}]" if source else ""),
                    "measured": measured,
                    "paper": "" if reference is None else reference,
                    "matches": ""
                    if reference is None or not source
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
    table: str, columns: Sequence[Mapping[str, Any]], csv: PathLike, md: PathLike
) -> pd.DataFrame:
    """Write Table 6, 7 or 8 (``table`` = "table6" | "table7" | "table8")."""
    frame = settings_table(table, columns)
    save_table(frame, settings_markdown(table, frame), csv, md)
    differ = frame[frame["matches"] == False]  # noqa: E712 ("" means no paper value)
    for row in differ.itertuples():
        log.warning("%s %s: %s, paper %s", row.model, row.quantity, row.measured, row.paper)
    log.info("%s: %d settings differ from the paper", table, len(differ))
    return frame
