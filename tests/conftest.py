"""Shared test scaffolding: the tiny networks of tests/smoke/config.yaml, digit subsets and
random-weight checkpoints. Test modules import these plain helpers (``from conftest import``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ddae.checkpoints import save_checkpoint
from ddae.datasets.digits import load_digits
from ddae.datasets.format import ImageDataset
from ddae.networks import build_network
from ddae.training import normalize_run


@pytest.fixture(scope="module")
def one_thread():
    """Tiny forwards run far faster single-threaded on a shared 2-core machine (thread start-up
    and contention dominate); modules opt in with ``pytestmark = usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def result_provenance(values: dict) -> dict:
    """The fields `ddae.result_files` requires beside a synthetic result's numbers."""
    extra = {"extractor": "inception", "samples": 50000} if "fid" in values else {}
    return {"created_by": "tests", "checkpoint": None, **extra}


# a grid search's choice JSON (ddae.probing.grid_search) less the chosen layer and t
GRID_CHOICE = {"steps": 1000, "test_accuracy": 50.0, "created_by": "tests", "checkpoint": None}


# the tiny networks of tests/smoke/config.yaml (16 px)
TINY_UNET = {
    "arch": "ddpm_unet",
    "resolution": 16,
    "base_channels": 32,
    "channel_mult": [1, 2],
    "num_blocks": 1,
    "attn_resolutions": [8],
    "dropout": 0.1,
}
TINY_DDPMPP = {
    "arch": "ddpmpp",
    "resolution": 16,
    "model_channels": 16,
    "channel_mult": [1, 2],
    "num_blocks": 1,
    "attn_resolutions": [8],
    "dropout": 0.1,
    "augment_dim": 9,
}
# the same at 8 px, where every forward pass counts (feature caches, probes)
TINY_UNET_8PX = {**TINY_UNET, "resolution": 8, "attn_resolutions": [4]}
TINY_DDPMPP_8PX = {**TINY_DDPMPP, "resolution": 8, "model_channels": 8, "attn_resolutions": [4]}


def digits_subset(
    path: Path, split: str = "train", count: int | None = None, resolution: int = 16
) -> Path:
    """The first ``count`` digits of a split (all of them without ``count``), saved to ``path``."""
    data = load_digits(resolution)[split]
    ImageDataset(data.images[:count], data.labels[:count], data.classes).save(path)
    return path


def tiny_checkpoint(
    path: Path, network: dict, framework: dict, seed: int = 0, model: bool = False
) -> Path:
    """A checkpoint of a randomly initialised network: its EMA weights (and ``model`` weights,
    the same, when asked) under the normalised run."""
    torch.manual_seed(seed)
    run = normalize_run({"network": network, "framework": framework})
    weights = build_network(run["network"]).state_dict()
    state = {"run": run, "ema": weights, **({"model": weights} if model else {})}
    save_checkpoint(state, path)
    return path


def tiny_probe_run(root: Path, train: int, test: int) -> tuple[Path, Path, Path]:
    """An untrained 8 px tiny DDPM UNet checkpoint (T = 100) and the first ``train`` / ``test``
    8×8 digits: what feature caches and probes run on."""
    return (
        tiny_checkpoint(root / "ckpt.pt", TINY_UNET_8PX, {"kind": "ddpm", "timesteps": 100}),
        digits_subset(root / "train.npz", "train", train, resolution=8),
        digits_subset(root / "test.npz", "test", test, resolution=8),
    )
