"""The paper's qualitative findings, checked on the pipeline's own result files.

What the miniature (tests/smoke, scikit-learn's digits) can show of the paper, each finding a
number with a threshold that a broken feature extractor fails:

* **pre-training creates the features** (Sec. 4, Tables 2-4): the pretrained network's best
  grid-search linear probe beats the same architecture with its random initial weights — a
  checkpoint written without training, probed by the same grid and protocol — by at least
  ``min_gain_over_random_init`` points, and chance (100 / classes) by ``min_above_chance``.
* **layer and noise matter** (Figure 2): the grid's accuracy spread (best − worst cell) is at
  least ``min_grid_spread`` points, the spread over t at the best layer at least
  ``min_noise_spread``, and the best t is not the grid's noisiest.
* **fine-tuning is at least the linear probe** (Tables 2-3): fine-tune − linear probe ≥
  ``min_finetune_gain`` (may be negative: a tolerance).
* **reference points** (the paper's tables): the same probe on raw pixels and the supervised
  classifier trained from scratch are reported beside DDAE; they are numbers to read, not checks
  (the paper compares against other datasets' baselines, see ``NOT_SHOWN``).

Thresholds come from the config (``findings.thresholds``); tests/smoke/config.yaml records the
measurements over seeds they were chosen from. `findings` writes results/findings.json (every
number, threshold and verdict) and results/findings.md.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ddae.configs import ConfigError, from_mapping
from ddae.result_files import read_result_csv, read_result_json, require
from ddae.result_writers import atomic_output, write_json

log = logging.getLogger(__name__)

# Paper findings the miniature does not show, said in words (findings.json "not_shown").
NOT_SHOWN = [
    "Figure 4 (the T = 64 ablation trains and samples worse and probes worse than T = 1000): "
    "two-epoch tiny runs on digits are too short and too noisy for the ordering of ablations.",
    "Tables 2-4 (DDAE's linear probe near, and its fine-tuning above, the supervised WideResNet; "
    "DDAE above other self-supervised methods): at this scale the tiny supervised network and a "
    "probe on raw digit pixels are reference points only; the miniature does not claim that DDAE "
    "features beat them.",
    "FID (Table 2): the miniature's FID uses an offline random-conv extractor, not Inception.",
]


@dataclass(frozen=True)
class Thresholds:
    """Pass marks of the findings (points of test accuracy, %)."""

    min_gain_over_random_init: float = 10.0
    min_above_chance: float = 20.0
    min_grid_spread: float = 10.0
    min_noise_spread: float = 10.0
    min_finetune_gain: float = 0.0


def read_grid_rows(path: str | Path) -> list[dict[str, float]]:
    """grid/epoch{E}.csv rows (layer, t, steps, sigma, test_accuracy), validated
    (`ddae.result_files`)."""
    grid = require(path, read_result_csv, "grid")
    return [
        {
            "layer": int(row.layer),
            "t": int(row.t),
            "steps": int(row.steps),
            "sigma": float(row.sigma),
            "test_accuracy": float(row.test_accuracy),
        }
        for row in grid.itertuples()
    ]


def _accuracy(path: str | Path | None) -> float | None:
    return (
        None
        if path is None
        else float(require(path, read_result_json, "accuracy")["test_accuracy"])
    )


def _best(rows: Sequence[Mapping[str, float]]) -> Mapping[str, float]:
    """Highest accuracy; ties to the lowest t, then layer (ddae.probing.grid_search's rule)."""
    return min(rows, key=lambda row: (-row["test_accuracy"], row["t"], row["layer"]))


def _check(name: str, value: float, threshold: float, claim: str) -> dict[str, Any]:
    return {
        "finding": name,
        "claim": claim,
        "value": round(value, 2),
        "threshold": threshold,
        "passed": bool(value >= threshold),
    }


def model_findings(files: Mapping[str, Any], thresholds: Thresholds) -> dict[str, Any]:
    """The findings of one model from its result files.

    ``files``: ``label``; ``grid`` and ``random_init_grid`` (grid CSVs of the pretrained and
    the untrained checkpoint); ``pixels`` (`ddae.probing.pixel_probe` JSON, which also gives
    the number of classes, hence chance); optional ``linear``, ``finetune`` (the final probe and
    fine-tuning JSONs) and ``supervised``.
    """
    grid = read_grid_rows(files["grid"])
    random_grid = read_grid_rows(files["random_init_grid"])
    best, random_best = _best(grid), _best(random_grid)
    accuracies = [row["test_accuracy"] for row in grid]
    at_best_layer = [row["test_accuracy"] for row in grid if row["layer"] == best["layer"]]
    noisiest = max(row["t"] for row in grid)
    pixels = require(files["pixels"], read_result_json, "pixel_probe")
    chance = 100.0 / int(pixels["num_classes"])
    checks = [
        _check(
            "pretraining_beats_random_init",
            best["test_accuracy"] - random_best["test_accuracy"],
            thresholds.min_gain_over_random_init,
            "best grid cell of the pretrained network minus that of the same network with its "
            "random initial weights (same grid, same probe)",
        ),
        _check(
            "above_chance",
            best["test_accuracy"] - chance,
            thresholds.min_above_chance,
            f"best grid cell minus chance ({chance:.1f} %)",
        ),
        _check(
            "grid_not_flat",
            max(accuracies) - min(accuracies),
            thresholds.min_grid_spread,
            "best minus worst (layer, t) cell of the grid (Figure 2)",
        ),
        _check(
            "noise_level_matters",
            max(at_best_layer) - min(at_best_layer),
            thresholds.min_noise_spread,
            "best minus worst t at the best layer (Figure 2)",
        ),
        {
            "finding": "best_t_not_noisiest",
            "claim": "the best t is not the grid's noisiest (Figure 2: heavy noise destroys the "
            "features)",
            "value": best["t"],
            "threshold": f"< {noisiest}",
            "passed": bool(best["t"] < noisiest),
        },
    ]
    # Figure 2 and Sec. 4: the best features lie at moderate noise, an interior t of the grid.
    # Checked where it holds; where the best t is an end of the grid it is not claimed
    # (`aggregate` words it under "Not shown at this scale").
    least_noisy = min(row["t"] for row in grid)
    if least_noisy < best["t"] < noisiest:
        checks.append(
            {
                "finding": "moderate_noise_optimum",
                "claim": "the best t lies strictly inside the grid's noise levels (Figure 2, "
                "Sec. 4: features at moderate noise)",
                "value": best["t"],
                "threshold": f"> {least_noisy} and < {noisiest}",
                "passed": True,
            }
        )
    linear = _accuracy(files.get("linear"))
    finetune = _accuracy(files.get("finetune"))
    if linear is not None and finetune is not None:
        checks.append(
            _check(
                "finetune_at_least_linear",
                finetune - linear,
                thresholds.min_finetune_gain,
                "fine-tuning minus linear probe accuracy (Tables 2-3)",
            )
        )
    return {
        "label": files["label"],
        "best_cell": dict(best),
        "random_init_best_cell": dict(random_best),
        "reference_points": {
            "DDAE best grid cell": best["test_accuracy"],
            "random-init network, best grid cell": random_best["test_accuracy"],
            "linear probe on raw pixels": float(pixels["test_accuracy"]),
            "DDAE linear probe (final, at the chosen pair)": linear,
            "DDAE fine-tuned": finetune,
            "supervised, from scratch": _accuracy(files.get("supervised")),
            "chance": chance,
        },
        "checks": checks,
        "grid_levels": sorted({int(row["t"]) for row in grid}),
        "files": {key: str(value) for key, value in files.items() if key != "label" and value},
    }


def _mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one seed)."""
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def aggregate(label: str, seeds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One model's findings over its seeds (`model_findings` of each): every check's mean ± sd.

    A numeric finding holds when its mean clears the pass mark and every seed's value does
    (the effect in the same direction at every seed); a finding with a worded pass mark when it
    holds at every seed. The moderate-noise optimum is a finding only where every seed's best t
    is interior; otherwise it is said under "Not shown at this scale" with each seed's best t.
    """
    moderate = "moderate_noise_optimum"
    everywhere = all(moderate in {check["finding"] for check in seed["checks"]} for seed in seeds)
    names = [c["finding"] for c in seeds[0]["checks"] if everywhere or c["finding"] != moderate]
    checks = []
    for name in names:
        per_seed = [c for seed in seeds for c in seed["checks"] if c["finding"] == name]
        if len(per_seed) != len(seeds):  # not checked at every seed (e.g. no fine-tuning)
            continue
        values = [float(check["value"]) for check in per_seed]
        mean, sd = _mean_sd(values)
        threshold = per_seed[0]["threshold"]
        held = all(check["passed"] for check in per_seed)
        checks.append(
            {
                **per_seed[0],
                "value": round(mean, 2),
                "sd": None if sd is None else round(sd, 2),
                "values": [round(value, 2) for value in values],
                "passed": held and (isinstance(threshold, str) or mean >= threshold),
            }
        )
    not_shown = []
    if not everywhere:
        best = [int(seed["best_cell"]["t"]) for seed in seeds]
        where = f"is {best[0]}" if len(best) == 1 else f"per seed is {best}"
        not_shown.append(
            f"{label}: the moderate-noise optimum (Figure 2, Sec. 4: the best t lies strictly "
            f"between the least and the most noisy level). Here the best t {where} of the "
            f"grid's {seeds[0]['grid_levels']}."
        )
    points, spread = {}, {}
    for name in seeds[0]["reference_points"]:
        values = [seed["reference_points"][name] for seed in seeds]
        known = [float(v) for v in values if v is not None]
        mean, sd = _mean_sd(known) if known else (None, None)
        points[name], spread[name] = mean, sd
    return {
        "label": label,
        "seeds": len(seeds),
        "checks": checks,
        "reference_points": points,
        "reference_sd": spread,
        "not_shown": not_shown,
        "per_seed": [dict(seed) for seed in seeds],
        "files": seeds[0]["files"],
    }


def scale_text(description: str, files: Mapping[str, Any], seeds: int) -> str:
    """Where the numbers come from, computed from the run (issue 22, item 7): the images of the
    raw-pixel probe's splits, the pretrained checkpoint's network and epoch, the grid's labels."""
    from ddae.checkpoints import load_checkpoint
    from ddae.networks import build_network

    pixels = require(files["pixels"], read_result_json, "pixel_probe")
    payload = load_checkpoint(files["checkpoint"])  # read once: its run config and epoch
    run, epoch = payload["run"], payload.get("epoch")
    parameters = sum(p.numel() for p in build_network(run["network"]).parameters())
    grid = require(files["grid_choice"], read_result_json, "grid_choice")
    per_class = grid.get("config", {}).get("labels_per_class")
    labels = (
        "all labelled images" if per_class is None else f"{per_class} labelled images per class"
    )
    parts = [
        f"{pixels.get('dataset', 'the dataset')} ({pixels['train_images']:,} train / "
        f"{pixels['test_images']:,} test images, {pixels['resolution']}x{pixels['resolution']} px)",
        f"{run['network']['arch']} ({parameters / 1000:,.0f}k parameters) under "
        f"{run['framework']['kind'].upper()}, {epoch} epochs",
        f"grid probes with {labels}",
        f"{seeds} seed{'s' if seeds != 1 else ''} of pre-training and grid",
    ]
    return f"{description}: " + "; ".join(parts) if description else "; ".join(parts)


def _cell(check: Mapping[str, Any]) -> str:
    if check.get("sd") is None:
        return f"{check['value']}"
    return f"{check['value']} ± {check['sd']} ({', '.join(map(str, check['values']))})"


def findings_markdown(record: Mapping[str, Any]) -> str:
    lines = [
        f"# Findings of the paper, checked on {record['scale']}",
        "",
        f"Overall: **{'all findings hold' if record['passed'] else 'SOME FINDINGS FAIL'}**.",
    ]
    for model in record["models"]:
        seeds = model.get("seeds", 1)
        value = "value" if seeds == 1 else f"mean ± sd over {seeds} seeds (each seed)"
        lines += ["", f"## {model['label']}", "", f"| finding | {value} | pass mark | holds |"]
        lines.append("|---|---|---|---|")
        for check in model["checks"]:
            mark = check["threshold"]
            mark = mark if isinstance(mark, str) else f">= {mark:g}"
            lines.append(
                f"| {check['finding']}: {check['claim']} | {_cell(check)} | {mark} | "
                f"{'yes' if check['passed'] else 'NO'} |"
            )
        lines += ["", "Reference points (test accuracy, %, same test split):", ""]
        for name, value in model["reference_points"].items():
            sd = model.get("reference_sd", {}).get(name)
            text = "not run" if value is None else f"{value:.1f}"
            lines.append(f"- {name}: {text}" + ("" if sd is None else f" ± {sd:.1f}"))
    lines += ["", "## Not shown at this scale", ""] + [f"- {text}" for text in record["not_shown"]]
    return "\n".join(lines) + "\n"


def findings(
    models: Sequence[Mapping[str, Any]],
    thresholds: Mapping[str, Any],
    scale: str,
    out_json: str | Path,
    out_md: str | Path,
) -> dict[str, Any]:
    """Check every model's findings over its seeds (`model_findings`, `aggregate`) and write the
    JSON and Markdown.

    ``models``: ``{"label", "seeds": [files of one seed, ...]}`` (files as `model_findings`
    reads them, plus ``checkpoint`` and ``grid_choice`` of the first seed for the scale); a
    model given as one flat files mapping is one seed. ``scale`` describes the run in words;
    its numbers are computed (`scale_text`) where the files allow.
    A failed finding is written and logged, not raised: the file is the evidence.
    """
    limits = from_mapping(Thresholds, thresholds, "findings.thresholds")
    if not models:
        raise ConfigError("findings.models: no model to check")
    results = []
    for model in models:
        seeds = model.get("seeds") or [model]
        per_seed = [model_findings({"label": model["label"], **files}, limits) for files in seeds]
        results.append(aggregate(model["label"], per_seed))
    first = (models[0].get("seeds") or [models[0]])[0]
    if "checkpoint" in first and "grid_choice" in first:
        scale = scale_text(scale, first, results[0]["seeds"])
    passed = all(check["passed"] for model in results for check in model["checks"])
    record = {
        "scale": scale,
        "passed": passed,
        "thresholds": asdict(limits),
        "models": results,
        "not_shown": [text for model in results for text in model["not_shown"]] + NOT_SHOWN,
        "created_by": "ddae.findings.findings",
    }
    write_json(out_json, record)
    with atomic_output(Path(out_md)) as handle:
        handle.write(findings_markdown(record).encode())
    for model in results:
        for check in model["checks"]:
            level = logging.INFO if check["passed"] else logging.WARNING
            log.log(
                level,
                "%s %s: %s (%s)",
                model["label"],
                check["finding"],
                _cell(check),
                "holds" if check["passed"] else "FAILS",
            )
    checks = [check for model in results for check in model["checks"]]
    log.info(
        "findings: %d of %d hold (%s)",
        sum(check["passed"] for check in checks),
        len(checks),
        out_md,
    )
    return record
