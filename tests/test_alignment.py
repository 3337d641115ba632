"""Alignment and uniformity (paper Sec. 3.3, Eq. 3–4): closed forms and an end-to-end run."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
from conftest import TINY_DDPMPP, TINY_UNET, digits_subset, tiny_checkpoint
from scipy.special import i0

from ddae.alignment import CSV_COLUMNS, align_uniform, alignment, uniformity
from ddae.checkpoints import load_network
from ddae.configs import ConfigError

RUNS = {
    "ddpm": {"network": TINY_UNET, "framework": {"kind": "ddpm", "timesteps": 100}},
    "edm": {"network": TINY_DDPMPP, "framework": {"kind": "edm"}},
}


def circle(n: int, radius: float = 1.0) -> torch.Tensor:
    angles = 2 * math.pi * torch.arange(n, dtype=torch.float64) / n
    return radius * torch.stack([angles.cos(), angles.sin()], dim=1)


def test_alignment_of_identical_views_is_zero():
    features = torch.randn(50, 7, generator=torch.Generator().manual_seed(0))
    assert alignment(features, features) == pytest.approx(0.0, abs=1e-12)
    assert alignment(features, 3.0 * features) == pytest.approx(0.0, abs=1e-12)  # normalised


def test_alignment_of_antipodal_views_is_four():
    features = torch.randn(20, 5, generator=torch.Generator().manual_seed(1))
    assert alignment(features, -features) == pytest.approx(4.0)


@pytest.mark.parametrize("n", [24, 101])
def test_uniformity_of_evenly_spread_circle_matches_closed_form(n):
    """n points at angles 2πk/n: ‖x − y‖² = 2 − 2cos θ, so over the n(n−1) ordered pairs of
    different points the mean of exp(−2‖x − y‖²) is (Σ_{m=1}^{n−1} e^{−4 + 4cos(2πm/n)})/(n − 1).
    The sum over all m = 0..n−1 equals n·e^{−4}·I0(4) up to terms of order I_n(4) (negligible
    for n ≥ 24), so L_uniform = log((n e^{−4} I0(4) − 1)/(n − 1))."""
    closed_form = math.log((n * math.exp(-4) * i0(4.0) - 1) / (n - 1))
    direct = math.log(
        sum(math.exp(-4 + 4 * math.cos(2 * math.pi * m / n)) for m in range(1, n)) / (n - 1)
    )
    assert direct == pytest.approx(closed_form, abs=1e-9)
    assert uniformity(circle(n, radius=2.5)) == pytest.approx(closed_form, abs=1e-9)


def test_uniformity_blocks_equal_all_pairs():
    features = torch.randn(37, 6, generator=torch.Generator().manual_seed(2))
    z = torch.nn.functional.normalize(features.double(), dim=1)
    distances = torch.cdist(z, z).pow(2)
    off_diagonal = ~torch.eye(37, dtype=torch.bool)
    expected = math.log(torch.exp(-2 * distances[off_diagonal]).mean().item())
    for block in (1, 5, 37, 100):
        assert uniformity(features, block=block) == pytest.approx(expected, abs=1e-12)


def test_collapsed_features_have_uniformity_zero():
    assert uniformity(torch.ones(10, 3)) == pytest.approx(0.0, abs=1e-12)


@pytest.fixture(scope="module")
def train_npz(tmp_path_factory):
    return digits_subset(tmp_path_factory.mktemp("data") / "train.npz", count=20)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    return {
        name: tiny_checkpoint(folder / f"{name}.pt", run["network"], run["framework"])
        for name, run in RUNS.items()
    }


def read_rows(path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == CSV_COLUMNS
        return list(reader)


@pytest.mark.parametrize(("name", "t", "steps"), [("ddpm", 10, 100), ("edm", 4, 18)])
def test_align_uniform_end_to_end(checkpoints, train_npz, tmp_path, name, t, steps):
    config = {"images": 12, "batch_size": 6, "seed": 3}
    out = tmp_path / "epoch1.csv"
    align_uniform(checkpoints[name], train_npz, t, steps, config, out, progress=False)
    rows = read_rows(out)
    net, framework, _ = load_network(checkpoints[name])
    blocks = net.decoder_blocks()
    assert [int(r["layer"]) for r in rows] == list(range(1, len(blocks) + 1))
    assert [r["layer_name"] for r in rows] == [n for n, _ in blocks]
    for row in rows:
        assert (int(row["t"]), int(row["steps"])) == (t, steps)
        assert float(row["sigma"]) == pytest.approx(framework.sigma_at_timestep(t, steps))
        assert 0.0 <= float(row["alignment"]) <= 4.0
        assert -4.0 <= float(row["uniformity"]) <= 0.0
    # the same seed gives the same numbers whatever the batch size
    again = tmp_path / "again.csv"
    align_uniform(
        checkpoints[name], train_npz, t, steps, {**config, "batch_size": 4}, again, progress=False
    )
    for a, b in zip(rows, read_rows(again), strict=True):
        assert float(a["alignment"]) == pytest.approx(float(b["alignment"]), rel=1e-4, abs=1e-7)
        assert float(a["uniformity"]) == pytest.approx(float(b["uniformity"]), rel=1e-4)


def test_more_noise_breaks_alignment(checkpoints, train_npz, tmp_path):
    """Two views of nearly clean images (t = 1) align far better than views at t = 90/100."""
    config = {"images": 8, "batch_size": 8}
    clean = align_uniform(
        checkpoints["ddpm"], train_npz, 1, 100, config, tmp_path / "a.csv", progress=False
    )
    noisy = align_uniform(
        checkpoints["ddpm"], train_npz, 90, 100, config, tmp_path / "b.csv", progress=False
    )
    assert np.mean([r["alignment"] for r in clean]) < 0.5 * np.mean([r["alignment"] for r in noisy])


def test_config_and_timestep_errors(checkpoints, train_npz, tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'imgs'"):
        align_uniform(checkpoints["edm"], train_npz, 4, 18, {"imgs": 4}, tmp_path / "x.csv")
    with pytest.raises(ConfigError, match="outside"):
        align_uniform(checkpoints["edm"], train_npz, 19, 18, {}, tmp_path / "x.csv")
