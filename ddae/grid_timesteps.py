"""The (layer, t) grid search of Appendix B / Figure 2 one timestep at a time, so that at most one
t's feature cache is on disk per job.

`ddae.probing.grid_search` probes the caches of every grid t of a checkpoint; at paper scale those
are ~3 GB per t (Tiny-ImageNet EDM: 50 t x 4.6 GB), all on disk together. Probes of different t
are independent (`ddae.probing.bank.fit_cached_probes`: each probe's initialisation is seeded by
(seed, t, layer); the epoch's batch order and each image's view by (seed, epoch) only;
``standardize`` uses each t's own statistics), so each t is done alone:

* `probe_timestep`: cache that t's features (`ddae.features.cache_features`) into a temporary
  folder, train the probes of every layer on them
  (`ddae.probing.grid_search.probe_feature_caches`), write the t's rows and provenance to a small
  JSON, and delete the cache whatever happens (with what a killed earlier attempt left);
* `merge_timesteps`: the grid CSV and choice JSON from the per-t JSONs (each read through its
  contract, `ddae.pipeline.result_kinds`: a NaN accuracy, a layer or t out of range or another
  checkpoint's file is refused, naming file and field), with `grid_search`'s writer
  `ddae.probing.grid_search.write_grid` (same rows, same `TIE_BREAK`): the files equal
  `grid_search`'s.

The per-t file is JSON, not CSV, because the choice JSON also records the cache's checkpoint,
feature config and folder; JSON stores floats by their shortest round-trip repr, so the merged
CSV's text is the one `grid_search` writes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ddae.cache_dirs import remove_cache_dir
from ddae.configs import ConfigError, from_mapping, to_mapping
from ddae.features import cache_features, load_feature_cache
from ddae.pipeline.result_checks import checked_record
from ddae.pipeline.result_reading import ResultFileError
from ddae.probing.grid_search import probe_feature_caches, write_grid
from ddae.result_writers import write_json
from ddae.settings.probes import GridSearchConfig
from ddae.sources import Source

log = logging.getLogger(__name__)
# What every per-t file of one grid must share (besides the probe config).
SHARED_KEYS = ("steps", "checkpoint", "features_config", "layers", "views", "num_classes")


def probe_timestep(
    checkpoint: str | Path,
    source: Source,
    t: int,
    steps: int,
    features_config: Mapping[str, Any],
    probe_config: Mapping[str, Any],
    cache_dir: str | Path,
    out_json: str | Path,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Cache one t's features in ``cache_dir``, probe every layer, write ``out_json``: the t's
    grid rows (``rows``) and provenance; ``cache_dir`` is removed on success and on failure."""
    cfg = from_mapping(GridSearchConfig, probe_config, "probe")  # bad config: before caching
    cache_dir = Path(cache_dir)
    try:
        cache_features(checkpoint, source, t, steps, features_config, cache_dir, device, progress)
        cache = load_feature_cache(cache_dir)
        rows = probe_feature_caches([cache], cfg, device, progress)
        record = {
            "t": cache.meta["t"],
            "feature_dir": str(cache_dir),
            **{key: cache.meta.get(key) for key in ("steps", "checkpoint", "views", "num_classes")},
            "features_config": cache.meta.get("config"),
            "features_ran_with": cache.meta.get("ran_with"),
            "layers": [layer["name"] for layer in cache.layers],
            "config": to_mapping(cfg),
            "rows": rows,
            "created_by": "ddae.grid_timesteps.probe_timestep",
        }
        del cache
    finally:
        remove_cache_dir(cache_dir)
    write_json(out_json, record)
    log.info("probed %d layers at t = %d/%d; removed %s", len(rows), t, steps, cache_dir)
    return record


def merge_timesteps(
    timestep_files: Sequence[str | Path],
    config: Mapping[str, Any],
    out_csv: str | Path,
    out_json: str | Path,
) -> dict[str, Any]:
    """The grid CSV and choice JSON of one checkpoint from its `probe_timestep` files (the same
    files `ddae.probing.grid_search` writes from the caches); returns the choice record."""
    cfg = from_mapping(GridSearchConfig, config, "probe")
    if not timestep_files:
        raise ConfigError("merge_timesteps needs at least one per-timestep probe file")
    records = []
    for path in timestep_files:
        try:  # bounded, and checked against the per-t contract (a NaN accuracy names its file)
            records.append((Path(path), checked_record(path, "grid_timestep")))
        except ResultFileError as error:
            message = f"not a valid per-timestep probe file: {error}"
            raise ConfigError(message) from error
    records.sort(key=lambda item: item[1]["t"])
    first_path, first = records[0]
    for path, record in records:
        for key in SHARED_KEYS:
            if record.get(key) != first.get(key):
                raise ConfigError(
                    f"{path}: {key} differs from {first_path} "
                    f"({record.get(key)!r} vs {first.get(key)!r})"
                )
        if record.get("config") != to_mapping(cfg):
            raise ConfigError(
                f"{path}: probe config {record.get('config')!r} differs from {to_mapping(cfg)!r}"
            )
    ts = [record["t"] for _, record in records]
    if len(set(ts)) != len(ts):
        raise ConfigError(f"per-timestep probe files repeat a timestep: {sorted(ts)}")
    return write_grid(
        [row for _, record in records for row in record["rows"]],
        cfg,
        feature_dirs=[record["feature_dir"] for _, record in records],
        checkpoint=first["checkpoint"],
        features_config=first["features_config"],
        out_csv=out_csv,
        out_json=out_json,
    )
