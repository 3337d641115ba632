"""A linear probe on raw pixels with a grid probe's protocol: the CPU miniature's reference
point beside DDAE features (`ddae.findings`), like the paper's supervised baseline (Sec. 4.1);
the option is the miniature's, not the paper's (`ddae.probing`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ddae.configs import from_mapping, to_mapping
from ddae.datasets.format import ImageDataset
from ddae.probing.bank import fit_cached_probes, labelled_subset
from ddae.result_writers import write_json
from ddae.settings.probes import GridSearchConfig

log = logging.getLogger(__name__)


def pixel_probe(
    train_path: str | Path,
    test_path: str | Path,
    config: Mapping[str, Any],
    out_json: str | Path,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """A linear probe on raw pixels (x in [−1, 1], flattened) with a grid probe's protocol.

    The miniature's reference point beside DDAE features (`ddae.findings`): the same
    `fit_cached_probes` (optimiser, schedule, ``standardize``, ``labels_per_class``, seed) as
    `grid_search` with the same config, on one un-augmented view of the images.
    """
    cfg = from_mapping(GridSearchConfig, config, "probe")
    train, test = ImageDataset.load(train_path), ImageDataset.load(test_path)

    def pixels(images: Tensor) -> Tensor:
        return (images.float() / 127.5 - 1.0).flatten(1)

    train_rows, test_rows = pixels(train.images), pixels(test.images)
    dim = train_rows.shape[1]
    fit = fit_cached_probes(
        train_rows[None, None],
        train.labels,
        test_rows[None],
        test.labels,
        [(0, dim)],
        [(0, 0)],
        len(train.classes),
        cfg,
        device,
    )
    record = {
        "test_accuracy": float(fit.test_accuracy[0]),
        "features": f"raw pixels ({'x'.join(map(str, train.images.shape[1:]))}, in [-1, 1])",
        "train": str(train_path),
        "test": str(test_path),
        "num_classes": len(train.classes),
        # the findings' scale line (ddae.findings.scale_text) is computed from these
        "dataset": Path(train_path).parent.name,
        "train_images": len(train.labels),
        "test_images": len(test.labels),
        "resolution": int(train.images.shape[-1]),
        "labelled_train_images": len(labelled_subset(train.labels, cfg.labels_per_class, cfg.seed)),
        "config": to_mapping(cfg),
        "checkpoint": None,  # raw pixels: no diffusion checkpoint
        "created_by": "ddae.probing.pixel_probe",
    }
    write_json(out_json, record)
    log.info(
        "linear probe on raw pixels (%s, %d labelled images): test accuracy %.2f%% (%s)",
        record["features"],
        record["labelled_train_images"],
        record["test_accuracy"],
        out_json,
    )
    return record
