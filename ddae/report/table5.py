"""Table 5 (Appendix A, "Network specifications for diffusion pre-training") is regenerated from
the networks the pre-training runs actually build: every specification is read from the
network's config and the parameter count is measured on the instantiated network, each beside
the paper's value, so a config that drifts from the paper shows up as a mismatch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ddae.networks import build_network, count_parameters
from ddae.report.reference import PathLike, save_table

log = logging.getLogger(__name__)

ARCHITECTURE_NAMES = {"ddpm_unet": "DDPM", "ddpmpp": "DDPM++", "wide_resnet": "WideResNet"}
BASE_CHANNEL_FIELDS = {"ddpm_unet": "base_channels", "ddpmpp": "model_channels"}

TABLE5_ROWS = [  # (key, row label in the paper)
    ("architecture", "architecture"),
    ("base_channels", "base channels"),
    ("channel_mult", "channel multipliers"),
    ("attention", "attention resolutions"),
    ("blocks", "blocks per resolution"),
    ("params_millions", "full DDAE params (M)"),
    ("epochs", "pre-training epochs"),
]


def _joined(values: Sequence[int], sep: str) -> str:
    return sep.join(str(v) for v in values)


def describe_pretraining(network: Mapping[str, Any], epochs: int) -> dict[str, Any]:
    """Table 5 quantities of one run, measured from its instantiated network."""
    arch = network["arch"]
    built = build_network(network)
    parameters = count_parameters(built)
    return {
        "architecture": ARCHITECTURE_NAMES[arch],
        "base_channels": getattr(built.config, BASE_CHANNEL_FIELDS[arch]),
        "channel_mult": _joined(built.config.channel_mult, "-"),
        "attention": _joined(built.config.attn_resolutions, ","),
        "blocks": built.config.num_blocks,
        "params_millions": round(parameters / 1e6, 1),
        "parameters": parameters,
        "epochs": epochs,
    }


def _same(measured: Any, paper: Any) -> bool:
    if isinstance(paper, float) or isinstance(measured, float):
        return abs(float(measured) - float(paper)) < 0.05 + 1e-9
    return str(measured) == str(paper)


def table5(columns: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Long-format Table 5: one row per (model column, quantity), measured beside the paper.

    ``columns`` items: ``{"label", "network": spec, "epochs": int, "paper": {key: value}}``.
    The exact parameter count appears as its own quantity ("parameters", no paper value).
    """
    rows = []
    for column in columns:
        measured = describe_pretraining(column["network"], column["epochs"])
        paper = column.get("paper", {})
        for key, name in [*TABLE5_ROWS, ("parameters", "parameters (exact)")]:
            reference = paper.get(key)
            rows.append(
                {
                    "model": column["label"],
                    "quantity": name,
                    "measured": measured[key],
                    "paper": "" if reference is None else reference,
                    "matches": "" if reference is None else _same(measured[key], reference),
                }
            )
    return pd.DataFrame(rows, columns=["model", "quantity", "measured", "paper", "matches"])


def table5_markdown(frame: pd.DataFrame) -> str:
    """The paper's layout: quantities down, models across; "measured (paper)" on a mismatch."""

    def cell(row: pd.Series) -> str:
        if row["quantity"] == "parameters (exact)":
            return f"{row['measured']:,}"
        if row["paper"] == "" or row["matches"]:
            return str(row["measured"])
        return f"{row['measured']} (paper: {row['paper']})"

    models = list(dict.fromkeys(frame["model"]))
    quantities = list(dict.fromkeys(frame["quantity"]))
    lines = [
        "| dataset model | " + " | ".join(models) + " |",
        "|---" * (len(models) + 1) + "|",
    ]
    for quantity in quantities:
        cells = [
            cell(frame[(frame["model"] == m) & (frame["quantity"] == quantity)].iloc[0])
            for m in models
        ]
        lines.append(f"| {quantity} | " + " | ".join(cells) + " |")
    return (
        "Table 5. Network specifications for diffusion pre-training "
        "(measured from the instantiated networks).\n\n" + "\n".join(lines) + "\n"
    )


def write_table5(columns: Sequence[Mapping[str, Any]], csv: PathLike, md: PathLike) -> None:
    frame = table5(columns)
    save_table(frame, table5_markdown(frame), csv, md)
    mismatches = frame[frame["matches"] == False]  # noqa: E712 ("" means no paper value)
    for _, row in mismatches.iterrows():
        log.warning(
            "%s %s: %s, paper %s", row["model"], row["quantity"], row["measured"], row["paper"]
        )
    log.info("table5: %d values differ from the paper", len(mismatches))
