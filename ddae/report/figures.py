"""The paper's Figures 2–6 from the pipeline's result files (matplotlib, Agg; PNG and PDF).

* Figure 2 (Sec. 3.2): linear-probe accuracy over decoder layer × timestep (grid search), one
  heatmap per model (DDPM and EDM side by side).
* Figure 3 (Sec. 3.3): uniformity vs alignment per decoder layer, with each layer's trajectory
  over training checkpoints (DDPM, DDPM++ trained by DDPM, DDPM++ trained by EDM).
* Figure 4 (Sec. 4.1.1): FID vs linear-probe accuracy of the DDPM noise ablations, one line per
  configuration, one dot per checkpoint epoch.
* Figure 5 (Sec. 4.1.2): FID vs accuracy (linear probe, fine-tune, scratch) of DDPM and EDM per
  dataset, with the supervised WideResNet (its config names it) as a horizontal line.
* Figure 6 (Sec. 4.1.3): accuracy vs noise level of the noise-conditional DDAE MLP head and of
  the noise-conditional WideResNet, VP and VE perturbations.

Each function takes explicit result paths (formats checked by `ddae.result_files`) and writes
one PNG and one PDF, with ``source`` (dataset, scale, networks, FID extractor; see
`ddae.pipeline.report_inputs`) printed under the figure. Nothing is invented: a series
whose files are missing is left out and named "not run" in its panel (never as a legend entry
without a point); legends sit under the axes. Paper values, where the paper states them, come from
``ddae/reference/paper_results.yaml`` and are drawn as hollow markers labelled "paper".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ddae.report.figure_layout import (  # noqa: E402
    COLORS,
    NOT_RUN,
    PathLike,
    empty_panel,
    figure_panels,
    legend_below,
    not_run_note,
    plain_log_ticks,
    save_figure,
)
from ddae.report.figure_notes import (  # noqa: E402
    alignment_note,
    draw_noise_level,
    fid_axis_label,
    noise_suffix,
    probe_text,
)
from ddae.report.reference import (  # noqa: E402
    is_miniature,
    load_reference,
    paper_in_our_numbering,
)
from ddae.report.table9 import grid_winner  # noqa: E402
from ddae.result_files import (  # noqa: E402
    ResultFileError,
    read_result_csv,
    read_result_json,
    require,
)

log = logging.getLogger(__name__)


def _available(path: PathLike | None) -> bool:
    if path is None:
        return False
    if not Path(path).is_file():
        log.warning("%s: missing; its series is left out of the figure", path)
        return False
    return True


def _json(path: PathLike | None, kind: str = "accuracy") -> dict[str, Any] | None:
    """A validated result JSON (`ddae.result_files`); None only when the file does not exist."""
    return read_result_json(path, kind) if _available(path) else None


def _csv(path: PathLike, kind: str) -> pd.DataFrame:
    return require(path, read_result_csv, kind)


# --- Figure 2 ----------------------------------------------------------------------------------


def figure2(
    grids: Mapping[str, PathLike | None],
    png: PathLike,
    pdf: PathLike,
    choices: Mapping[str, PathLike | None],
    paper: Mapping[str, str] | None = None,
    source: str | None = None,
) -> None:
    """Heatmaps of grid-search linear-probe accuracy, decoder layer (rows) × timestep (columns).

    ``grids``: panel label → grid/epoch{E}.csv; ``choices``: panel label → the grid search's
    choice file grid/epoch{E}.json, whose (layer, t) is starred as ours. ``paper``: panel label
    → Table 9 key of the reference file; the paper's adopted (layer, t) is circled when its
    steps match the grid's and the grid is of the paper's dataset (not a stand-in).
    """
    table9 = load_reference()["table9"]
    probes = {
        label: probe_text(_json(choices.get(label), "grid_choice"))
        for label in grids
        if _available(choices.get(label))
    }
    with figure_panels(len(grids), width=4.6, height=4.0) as (fig, axes):
        for ax, (label, path) in zip(axes, grids.items(), strict=False):
            if not _available(path):
                empty_panel(ax, label)
                continue
            grid = _csv(path, "grid")
            table = grid.pivot_table(index="layer", columns="t", values="test_accuracy")
            steps = int(grid["steps"].iloc[0])
            layers = int(grid["layer"].max())
            image = ax.imshow(
                np.ma.masked_invalid(table.to_numpy(dtype=float)),
                origin="lower",
                aspect="auto",
                cmap="viridis",
            )
            ax.grid(False)
            ts, ks = list(table.columns), list(table.index)
            ax.set_xticks(range(len(ts)), [str(t) for t in ts], rotation=90 if len(ts) > 12 else 0)
            ax.set_yticks(range(len(ks)), [str(k) for k in ks])
            ax.set_xlabel(f"timestep t (of {steps}; larger = noisier)")
            ax.set_ylabel(f"decoder layer k (of {layers})")
            best = grid_winner(path, choices.get(label))
            if best is None:
                raise ResultFileError(
                    f"{path}: the grid search's choice file {choices.get(label)} does not exist; "
                    "rerun its grid search"
                )
            ax.plot(
                ts.index(best["t"]),
                ks.index(best["layer"]),
                marker="*",
                color="white",
                markeredgecolor="black",
                markersize=12,
                linestyle="none",
                label=f"ours best: {int(best['layer'])}/{layers}, t {int(best['t'])} "
                f"({best['test_accuracy']:.1f}%)",
            )
            key = (paper or {}).get(label)
            if key and is_miniature(key, path):  # another dataset's or a stand-in's grid
                key = None
            choice = paper_in_our_numbering(table9[key]) if key in table9 else None
            if choice and choice["steps"] == steps and choice["t"] in ts and choice["layer"] in ks:
                ax.plot(
                    ts.index(choice["t"]),
                    ks.index(choice["layer"]),
                    marker="o",
                    markersize=13,
                    markerfacecolor="none",
                    markeredgecolor="red",
                    markeredgewidth=1.5,
                    linestyle="none",
                    label=f"paper (Table 9): {choice['layer']}/{choice['layers']}, "
                    f"t {choice['t']}/{choice['steps']}",
                )
            probe = probes.get(label)
            ax.set_title(f"{label}\n(probe: {probe})" if probe else label)
            ax.legend(loc="upper right", framealpha=0.8)
            fig.colorbar(image, ax=ax, label="linear-probe test accuracy (%)")
        title = "Figure 2. Linear-probe accuracy over layer × timestep (grid search)"
        if len({text for text in probes.values() if text}) > 1:
            title += ": the panels' probes differ (see each panel), compare within a panel"
        save_figure(fig, png, pdf, source, title)


# --- Figure 3 ----------------------------------------------------------------------------------


def figure3(
    series: Mapping[str, Mapping[int, PathLike | None]],
    png: PathLike,
    pdf: PathLike,
    layers: Mapping[str, Sequence[int]] | None = None,
    source: str | None = None,
) -> None:
    """Uniformity (x) vs alignment (y) per decoder layer, one trajectory over checkpoints.

    ``series``: panel label → {checkpoint epoch: align_uniform/epoch{E}.csv}. ``layers``:
    optional panel label → the 1-based layers to draw (default all). Arrows run from each
    checkpoint to the next, so the direction of training is read off the line; dots grow with
    the epoch and the last checkpoint is ringed and labelled with its layer number. Lower left
    is better.
    """
    with figure_panels(len(series), width=4.4, height=3.8) as (fig, axes):
        for ax, (label, files) in zip(axes, series.items(), strict=False):
            frames = []
            for epoch, path in sorted(files.items()):
                if _available(path):
                    frames.append(_csv(path, "align_uniform").assign(epoch=int(epoch)))
            if not frames:
                empty_panel(ax, label)
                continue
            data = pd.concat(frames)
            total = int(data["layer"].max())
            chosen = sorted((layers or {}).get(label) or data["layer"].unique())
            cmap = plt.get_cmap("viridis")
            epochs = sorted(data["epoch"].unique())
            sizes = dict(zip(epochs, np.linspace(8, 40, len(epochs)), strict=True))
            for layer in chosen:
                track = data[data["layer"] == layer].sort_values("epoch")
                if track.empty:
                    continue
                color = cmap((layer - 1) / max(total - 1, 1))
                points = list(zip(track["uniformity"], track["alignment"], strict=True))
                for start, end in zip(points, points[1:], strict=False):
                    ax.annotate(
                        "",
                        xy=end,
                        xytext=start,
                        arrowprops={"arrowstyle": "-|>", "color": color, "lw": 1, "shrinkB": 3},
                    )
                ax.scatter(
                    track["uniformity"],
                    track["alignment"],
                    s=[sizes[e] for e in track["epoch"]],
                    color=color,
                    zorder=3,
                    label=f"layer {layer}/{total}",
                )
                last = track.iloc[-1]
                ax.scatter(
                    last["uniformity"],
                    last["alignment"],
                    s=70,
                    facecolor="none",
                    edgecolor=color,
                    linewidth=1.2,
                    zorder=4,
                )
                ax.annotate(
                    str(layer),
                    (last["uniformity"], last["alignment"]),
                    textcoords="offset points",
                    xytext=(4, 3),
                    fontsize=7,
                )
            missing = [e for e, p in files.items() if not _available(p)]
            note = f"; epochs {sorted(missing)} {NOT_RUN}" if missing else ""
            t = data["t"].iloc[0]
            steps = data["steps"].iloc[0]
            ax.set_title(f"{label}\n(t = {t}/{steps}; epochs {epochs[0]}→{epochs[-1]}{note})")
            ax.set_xlabel("uniformity L_uniform (Eq. 4, lower = more uniform)")
            ax.set_ylabel("alignment L_align (Eq. 3)\nlower = more aligned")
            note = alignment_note(data[data["layer"].isin(chosen)])
            if note:
                ax.text(
                    0.02,
                    0.97,
                    note,
                    transform=ax.transAxes,
                    va="top",
                    fontsize=6.5,
                    bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85},
                )
            legend_below(ax, ncol=4 if len(chosen) > 8 else 3)
        title = (
            "Figure 3. Alignment and uniformity of decoder layers during training\n"
            "(arrows run from each checkpoint to the next; the ringed dot is the final epoch)"
        )
        save_figure(fig, png, pdf, source, title)


# --- Figure 4 ----------------------------------------------------------------------------------


def figure4(
    series: Mapping[str, Sequence[Mapping[str, Any]]],
    png: PathLike,
    pdf: PathLike,
    source: str | None = None,
) -> None:
    """FID (x, log scale) vs best linear-probe accuracy (y) of the DDPM noise ablations.

    ``series``: configuration label (e.g. "T=1000", "T=64", "β lower half") → list of
    ``{"epoch": E, "fid": fid/epoch{E}.json, "linear": linear/epoch{E}.json}``; one line per
    label through its checkpoints in epoch order, each dot annotated with its epoch.
    """
    extractors: set[str] = set()
    missing = []
    with figure_panels(1, width=6.0, height=4.4) as (fig, axes):
        ax = axes[0]
        drawn_fids = []
        for index, (label, points) in enumerate(series.items()):
            xs, ys, epochs, fids = [], [], [], {}
            for point in sorted(points, key=lambda p: int(p["epoch"])):
                fid, linear = _json(point.get("fid"), "fid"), _json(point.get("linear"))
                if fid is None or linear is None:
                    continue
                fids[int(point["epoch"])] = fid
                xs.append(float(fid["fid"]))
                extractors.add(fid.get("extractor", "inception"))
                ys.append(float(linear["test_accuracy"]))
                epochs.append(int(point["epoch"]))
            color = COLORS[index % len(COLORS)]
            if not xs:
                missing.append(label)
                continue
            absent = len(points) - len(xs)
            suffix = f" ({absent} checkpoint(s) not run)" if absent else ""
            suffix += noise_suffix(fids)
            drawn_fids += fids.values()
            ax.plot(xs, ys, color=color, marker="o", markersize=4, label=f"{label}{suffix}")
            for x, y, epoch in zip(xs, ys, epochs, strict=True):
                ax.annotate(
                    str(epoch),
                    (x, y),
                    textcoords="offset points",
                    xytext=(3, 3),
                    fontsize=6,
                    color=color,
                )
        draw_noise_level(ax, drawn_fids)
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis)
        ax.set_xlabel(fid_axis_label(extractors, "FID (log scale, lower = better generation)"))
        ax.set_ylabel("linear-probe test accuracy (%)")
        ax.set_title(
            "Figure 4. Generation vs recognition of DDPM noise ablations\n"
            "(dots: checkpoints, labelled by epoch)"
        )
        not_run_note(ax, missing)
        legend_below(ax, ncol=2)
        save_figure(fig, png, pdf, source)


# --- Figure 5 ----------------------------------------------------------------------------------

EVALUATIONS = (
    ("linear", "o", "linear probe"),
    ("finetune", "s", "fine-tune"),
    ("scratch", "^", "scratch (same encoder, no pre-training)"),
)


def figure5(
    panels: Mapping[str, Mapping[str, Any]],
    png: PathLike,
    pdf: PathLike,
    source: str | None = None,
) -> None:
    """FID (x) vs accuracy (y) of DDPM and EDM per dataset, WideResNet as a horizontal line.

    ``panels``: dataset label → ``{"models": {model label: {"fid", "linear", "finetune",
    "scratch": result file, "paper": reference key (optional, e.g. "cifar10_edm")}},
    "wrn": baselines/wrn.json, "wrn_label": what that network is (e.g. "WRN-10-1"),
    "paper_wrn": reference key (optional, only on the paper's dataset)}``. Ours are filled
    markers (one per evaluation, at the model's FID); the paper's values that the text states
    with a FID are hollow markers, drawn only when every FID of ours on the panel is an
    Inception FID too (a stand-in extractor's FIDs are on another scale); the paper's
    WideResNet accuracy is a dotted line. What was not run is named in the panel, not in the
    legend, and the legend sits under the axes, clear of the reference lines.
    """
    figure5_reference = load_reference()["figure5"]
    all_extractors: set[str] = set()
    with figure_panels(len(panels), width=4.6, height=4.6) as (fig, axes):
        for ax, (dataset, panel) in zip(axes, panels.items(), strict=False):
            drawn, missing, extractors = False, [], set()
            fids = {
                model: _json(files.get("fid"), "fid") for model, files in panel["models"].items()
            }
            extractors = {fid.get("extractor", "inception") for fid in fids.values() if fid}
            all_extractors |= extractors
            stand_in = bool(extractors - {"inception"})
            draw_noise_level(ax, list(fids.values()))
            for index, (model, files) in enumerate(panel.get("models", {}).items()):
                color = COLORS[index % len(COLORS)]
                fid = fids[model]
                paper = figure5_reference.get(files.get("paper") or "", {})
                if fid is None:
                    missing.append(f"{model} FID")
                else:
                    x = float(fid["fid"])
                    for kind, marker, name in EVALUATIONS:
                        result = _json(files.get(kind))
                        if result is None:
                            if files.get(kind):
                                missing.append(f"{model} {name.split(' (')[0]}")
                            continue
                        ax.scatter(
                            x,
                            float(result["test_accuracy"]),
                            marker=marker,
                            color=color,
                            s=40,
                            zorder=3,
                            label=f"{model} {name}{noise_suffix({0: fid})}",
                        )
                        drawn = True
                if "fid" in paper and not stand_in:
                    for kind, marker, name in EVALUATIONS:
                        if kind in paper:
                            ax.scatter(
                                paper["fid"],
                                paper[kind],
                                marker=marker,
                                s=40,
                                facecolor="none",
                                edgecolor=color,
                                zorder=3,
                                label=f"{model} {name} (paper)",
                            )
                            drawn = True
            wrn = _json(panel.get("wrn"))
            if wrn is not None:
                ax.axhline(
                    float(wrn["test_accuracy"]),
                    color="black",
                    linestyle="--",
                    linewidth=1,
                    label=f"{panel.get('wrn_label', 'WideResNet')} (ours)",
                )
            elif panel.get("wrn"):
                missing.append(panel.get("wrn_label", "WideResNet"))
            paper_wrn = figure5_reference.get(panel.get("paper_wrn") or "", {})
            if "supervised" in paper_wrn:
                ax.axhline(
                    paper_wrn["supervised"],
                    color="gray",
                    linestyle=":",
                    linewidth=1,
                    label="WideResNet-28-10 (paper)",
                )
            if not drawn and wrn is None:
                ax.text(
                    0.5, 0.5, "no result files", ha="center", va="center", transform=ax.transAxes
                )
            title = dataset
            if stand_in:
                title += "\n(paper's Inception-FID points left out: ours use a stand-in extractor)"
            ax.set_title(title)
            ax.set_xlabel(fid_axis_label(extractors, "FID (lower = better generation)"))
            ax.set_ylabel("test accuracy (%)")
            not_run_note(ax, missing)
            legend_below(ax)
        save_figure(fig, png, pdf, source, "Figure 5. Generative and discriminative performance")


# --- Figure 6 ----------------------------------------------------------------------------------


def figure6(
    panels: Mapping[str, Mapping[str, PathLike | None]],
    png: PathLike,
    pdf: PathLike,
    source: str | None = None,
) -> None:
    """Accuracy (y) vs noise level σ (x, log) of noise-conditional classifiers.

    ``panels``: panel title (e.g. "VP: DDPM vs WideResNet") → {series label →
    noisy/epoch{E}.csv or baselines/noisy_wrn_{vp,ve}.csv}. σ is the VE-equivalent noise
    level x = x0 + σε of the CSVs (for VP, σ_t = √((1 − ᾱ_t)/ᾱ_t)).
    """
    with figure_panels(len(panels), width=4.6, height=3.6) as (fig, axes):
        for ax, (title, files) in zip(axes, panels.items(), strict=False):
            any_drawn, missing = False, []
            for index, (label, path) in enumerate(files.items()):
                color = COLORS[index % len(COLORS)]
                if not _available(path):
                    missing.append(label)
                    continue
                curve = _csv(path, "noisy").sort_values("sigma")
                ax.plot(
                    curve["sigma"],
                    curve["test_accuracy"],
                    color=color,
                    marker="o",
                    markersize=3,
                    label=label,
                )
                any_drawn = True
            if any_drawn:
                ax.set_xscale("log")
            # the whole 0-100 % axis: curves at chance stay flat lines near the bottom (an
            # autoscaled axis zoomed a 10.0-10.55 % chance band into a curve, issue 22)
            ax.set_ylim(0, 100)
            ax.set_title(title)
            ax.set_xlabel("noise level σ (log scale)")
            ax.set_ylabel("test accuracy on noised images (%)")
            not_run_note(ax, missing)
            legend_below(ax)
        title = "Figure 6. Noise-conditional classifiers over noise scales"
        save_figure(fig, png, pdf, source, title)
