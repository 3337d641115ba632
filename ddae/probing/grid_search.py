"""The (layer, t) grid search of one checkpoint (paper Appendix B, Figure 2; Table 9 lists the
pairs it chose): every decoder block at every grid t is linear-probed on cached features
(`ddae.features`) by `ddae.probing.bank.fit_cached_probes`, and the grid CSV and the choice JSON
(the best cell by `TIE_BREAK`) are written. The pipeline runs it one t per job
(`ddae.grid_timesteps`), which gives the same files."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ddae.configs import ConfigError, from_mapping, to_mapping
from ddae.features import FeatureCache, feature_bytes, load_feature_cache
from ddae.probing.bank import fit_cached_probes
from ddae.result_writers import write_csv, write_json
from ddae.settings.probes import GridSearchConfig

log = logging.getLogger(__name__)
GRID_CSV_COLUMNS = ["layer", "layer_name", "t", "steps", "sigma", "test_accuracy"]
TIE_BREAK = "highest test_accuracy; ties broken by lowest t, then lowest layer"


def _check_consistent(caches: Sequence[FeatureCache]) -> None:
    first = caches[0]
    for cache in caches[1:]:
        for key in ("layers", "steps", "views", "checkpoint", "num_classes"):
            if cache.meta[key] != first.meta[key]:
                raise ConfigError(
                    f"{cache.path}: {key} differs from {first.path} "
                    f"({cache.meta[key]!r} vs {first.meta[key]!r})"
                )
        if not (
            np.array_equal(cache.train_labels, first.train_labels)
            and np.array_equal(cache.test_labels, first.test_labels)
        ):
            raise ConfigError(f"{cache.path}: labels differ from {first.path}")
    ts = [cache.meta["t"] for cache in caches]
    if len(set(ts)) != len(ts):
        raise ConfigError(f"feature directories repeat a timestep: {sorted(ts)}")


def _groups(caches: Sequence[FeatureCache], budget_bytes: float) -> list[list[FeatureCache]]:
    groups: list[list[FeatureCache]] = [[]]
    used = 0
    for cache in caches:
        size = feature_bytes(cache)
        if groups[-1] and used + size > budget_bytes:
            groups.append([])
            used = 0
        groups[-1].append(cache)
        used += size
    return groups


def _stack(arrays: Sequence[np.ndarray], device: torch.device) -> Tensor:
    """Copy memory-mapped float16 arrays into one (G, ...) tensor on ``device``."""
    out = torch.empty((len(arrays), *arrays[0].shape), dtype=torch.float16, device=device)
    for g, array in enumerate(arrays):
        for k in range(array.shape[0] if array.ndim == 3 else 1):  # one view at a time
            part = array[k] if array.ndim == 3 else array
            target = out[g, k] if array.ndim == 3 else out[g]
            target.copy_(torch.from_numpy(np.array(part, dtype=np.float16)))
    return out


def grid_search(
    feature_dirs: Sequence[str | Path],
    config: Mapping[str, Any],
    out_csv: str | Path,
    out_json: str | Path,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Linear-probe every (layer, t) of one checkpoint's cached features (Appendix B).

    Writes ``out_csv`` (columns layer, layer_name, t, steps, sigma, test_accuracy; sorted by t,
    then layer) and ``out_json`` (the best row plus checkpoint, config, created_by; best = highest
    test accuracy, ties broken by lowest t then lowest layer). Returns the JSON record. The
    pipeline runs it one t at a time (`ddae.grid_timesteps`), which gives the same files.
    """
    cfg = from_mapping(GridSearchConfig, config, "probe")
    if not feature_dirs:
        raise ConfigError("grid_search needs at least one feature directory")
    caches = sorted((load_feature_cache(d) for d in feature_dirs), key=lambda c: c.meta["t"])
    _check_consistent(caches)
    rows = probe_feature_caches(caches, cfg, device, progress)
    return write_grid(
        rows,
        cfg,
        feature_dirs=[str(c.path) for c in caches],
        checkpoint=caches[0].meta["checkpoint"],
        features_config=caches[0].meta.get("config"),
        out_csv=out_csv,
        out_json=out_json,
    )


def probe_feature_caches(
    caches: Sequence[FeatureCache],
    cfg: GridSearchConfig,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """The grid CSV rows of every (layer, t) probe of consistent ``caches`` (one per t), trained
    in groups of t that fit ``cfg.resident_gib``; a probe's result does not depend on which
    other t share its group (`fit_cached_probes`: seeds keyed by (t, layer), shared batches)."""
    device = torch.device(device)
    layers = caches[0].layers
    slices = [(layer["offset"], layer["dim"]) for layer in layers]
    train_labels = torch.from_numpy(np.asarray(caches[0].train_labels))
    test_labels = torch.from_numpy(np.asarray(caches[0].test_labels))
    rows = []
    for group in _groups(caches, cfg.resident_gib * 2**30):
        fit = fit_cached_probes(
            _stack([c.train for c in group], device),
            train_labels,
            _stack([c.test for c in group], device),
            test_labels,
            slices,
            [(c.meta["t"], layer["index"]) for c in group for layer in layers],
            caches[0].meta["num_classes"],
            cfg,
            device,
            progress=progress,
        )
        accuracy = iter(fit.test_accuracy.tolist())
        for cache in group:
            for layer in layers:
                rows.append(
                    {
                        "layer": layer["index"],
                        "layer_name": layer["name"],
                        "t": cache.meta["t"],
                        "steps": cache.meta["steps"],
                        "sigma": cache.meta["sigma"],
                        "test_accuracy": next(accuracy),
                    }
                )
    return rows


def write_grid(
    rows: Sequence[Mapping[str, Any]],
    cfg: GridSearchConfig,
    *,
    feature_dirs: Sequence[str],
    checkpoint: str,
    features_config: Mapping[str, Any] | None,
    out_csv: str | Path,
    out_json: str | Path,
) -> dict[str, Any]:
    """Write the grid CSV (rows sorted by t, then layer) and the choice JSON (the best row by
    `TIE_BREAK` plus provenance); returns the JSON record."""
    rows = sorted(rows, key=lambda row: (row["t"], row["layer"]))
    best = min(rows, key=lambda row: (-row["test_accuracy"], row["t"], row["layer"]))
    record = {
        **best,
        "tie_break": TIE_BREAK,
        "probes": len(rows),
        "epochs": cfg.epochs,
        "feature_dirs": list(feature_dirs),
        "checkpoint": checkpoint,
        "config": to_mapping(cfg),
        "features_config": features_config,
        "created_by": "ddae.probing.grid_search",
    }
    write_csv(out_csv, GRID_CSV_COLUMNS, rows)
    write_json(out_json, record)
    log.info(
        "grid search of %d probes: best layer %d (%s), t = %d/%d, test accuracy %.2f%% (%s)",
        len(rows),
        best["layer"],
        best["layer_name"],
        best["t"],
        best["steps"],
        best["test_accuracy"],
        out_csv,
    )
    return record
