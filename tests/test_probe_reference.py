"""The pipeline's probes against an independent converged reference (issue 22): scikit-learn's
logistic regression (standardised, lbfgs) on the same cached features must be within 3 points.

Features: an untrained tiny 8 px DDPM UNet (T = 100) at t = 11 on all of scikit-learn's digits
(1,437 training / 360 test), 3 views cropped with padding 1 (the smoke config's crop_padding 2 at
16 px, scaled to 8 px). The final probe runs the network in the loop; its epoch e sees exactly
view e of the cache (`ddae.probing.linear_probe`), so the reference trains on the same rows. The
grid's probe bank trains on the cache itself. Each test also checks that the setting the smoke
config used before issue 22 stops more than 3 points short, so the comparison can fail.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_UNET_8PX, digits_subset, tiny_checkpoint
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from ddae.features import cache_features, load_feature_cache
from ddae.probing.grid_search import grid_search
from ddae.probing.linear_probe import linear_probe
from ddae.sources import ImageSource

pytestmark = pytest.mark.usefixtures("one_thread")

T, STEPS, VIEWS = 11, 100, 3
AUGMENTATION = {"hflip": False, "crop_padding": 1}
TOLERANCE = 3.0  # points (issue 22)


@pytest.fixture(scope="module")
def digits_features(tmp_path_factory) -> tuple[Path, ImageSource, Path]:
    """(checkpoint, source, cache directory of VIEWS training views at T)."""
    root = tmp_path_factory.mktemp("probe_reference")
    checkpoint = tiny_checkpoint(
        root / "ckpt.pt", TINY_UNET_8PX, {"kind": "ddpm", "timesteps": 100}
    )
    source = ImageSource(
        digits_subset(root / "train.npz", "train", resolution=8),
        digits_subset(root / "test.npz", "test", resolution=8),
    )
    features = {"views": VIEWS, "batch_size": 512, **AUGMENTATION}
    cache = cache_features(checkpoint, source, T, STEPS, features, root / "cache", "cpu", False)
    return checkpoint, source, cache


def reference_accuracy(cache_dir: Path, layer: int) -> float:
    """Test accuracy (percent) of a converged logistic regression on every view of one layer."""
    cache = load_feature_cache(cache_dir)
    spec = cache.layers[layer - 1]
    columns = slice(spec["offset"], spec["offset"] + spec["dim"])
    train = np.asarray(cache.train[:, :, columns], dtype=np.float32).reshape(-1, spec["dim"])
    labels = np.tile(cache.train_labels, cache.train.shape[0])
    scaler = StandardScaler().fit(train)
    model = LogisticRegression(max_iter=5000).fit(scaler.transform(train), labels)
    test = scaler.transform(np.asarray(cache.test[:, columns], dtype=np.float32))
    return 100.0 * float((model.predict(test) == cache.test_labels).mean())


def test_final_probe_lbfgs_matches_a_converged_logistic_regression(digits_features, tmp_path):
    checkpoint, source, cache = digits_features
    layer = 4
    expected = reference_accuracy(cache, layer)
    common = {"epochs": VIEWS, "batch_size": 128, "standardize": True, **AUGMENTATION}

    def probe(config: dict) -> float:
        out = tmp_path / "probe.json"
        record = linear_probe(checkpoint, source, layer, T, STEPS, config, out, None, "cpu", False)
        return record["test_accuracy"]

    assert probe({**common, "solver": "lbfgs"}) == pytest.approx(expected, abs=TOLERANCE)
    # the smoke config before issue 22: Adam for 3 epochs at 3e-2 stops short of convergence
    assert probe({**common, "lr": 3.0e-2}) < expected - TOLERANCE


def test_grid_probes_match_a_converged_logistic_regression(digits_features, tmp_path):
    _, _, cache = digits_features
    expected = [reference_accuracy(cache, layer) for layer in (1, 2, 3, 4)]

    def grid(config: dict) -> list[float]:
        grid_search([cache], config, tmp_path / "grid.csv", tmp_path / "grid.json", "cpu", False)
        with (tmp_path / "grid.csv").open() as handle:
            return [float(row["test_accuracy"]) for row in csv.DictReader(handle)]

    # the smoke config's tiny_grid (Adam, the grid's only solver)
    converged = grid({"epochs": 30, "lr": 0.1, "batch_size": 128, "standardize": True})
    assert converged == pytest.approx(expected, abs=TOLERANCE)
    # before issue 22: 10 epochs at 3e-2 leave a layer more than 3 points short
    short = grid({"epochs": 10, "lr": 3.0e-2, "batch_size": 128, "standardize": True})
    assert max(e - a for e, a in zip(expected, short, strict=True)) > TOLERANCE
