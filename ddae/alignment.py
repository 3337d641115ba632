"""Label-free feature metrics: alignment and uniformity per decoder layer (paper Sec. 3.3).

Following Wang & Isola (2020, the paper's [58]), the pooled features of every decoder block are
L2-normalised onto the unit hypersphere and two losses are measured on the *training* set at the
run's chosen timestep t (paper Eq. 3–4):

* alignment  L_align(t)   = E_{x, ε1, ε2} ‖f_t(x_t^ε1) − f_t(x_t^ε2)‖²  (two independent noise
  draws of the same image are the positive pair; 0 = noise-invariant features, 4 = antipodal);
* uniformity L_uniform(t) = log E_{x ≠ y, ε} exp(−2‖f_t(x_t^ε) − f_t(y_t^ε)‖²)  (pairs of
  different images, each noised once; −4 for orthogonal points … 0 for collapsed features).

Lower is better for both ("near lower left corners" of the paper's Figure 3). `align_uniform`
measures both for EVERY decoder block in one forward pass per noise draw (the probes' own
`ddae.features.DecoderFeatures` hooks: global average pooling of each block) and writes
``layer, layer_name, t, steps, sigma, alignment, uniformity`` (the columns `ddae.result_files`
checks for an align_uniform CSV). Images are noised in the frameworks' common VE coordinates
x_t = x0 + σ_t ε and enter the network through ``framework.network_inputs``, exactly as for
denoising and linear probing (Sec. 3.2).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ddae.batching import to_model_range
from ddae.checkpoints import load_network
from ddae.configs import from_mapping
from ddae.datasets.format import ImageDataset
from ddae.features import DecoderFeatures
from ddae.result_writers import write_csv
from ddae.settings.alignment import AlignUniformConfig

log = logging.getLogger(__name__)

CSV_COLUMNS = ["layer", "layer_name", "t", "steps", "sigma", "alignment", "uniformity"]


# --- the metrics (pure functions) --------------------------------------------------------------


def _normalized(features: Tensor) -> Tensor:
    return F.normalize(features.double(), dim=1)


def alignment(f1: Tensor, f2: Tensor) -> float:
    """Eq. 3: mean ‖n(f1_i) − n(f2_i)‖² over rows i, n = L2 normalisation; f1, f2: (N, D)."""
    if f1.shape != f2.shape or f1.ndim != 2:
        raise ValueError(
            f"need two (N, D) feature matrices of one shape, got {f1.shape}, {f2.shape}"
        )
    return float((_normalized(f1) - _normalized(f2)).pow(2).sum(dim=1).mean())


def _pair_exp_sum(features: Tensor, block: int) -> tuple[float, int]:
    """Σ_{i≠j} exp(−2‖z_i − z_j‖²) over ordered pairs of the normalised rows, and the pair count.

    On the unit sphere ‖z_i − z_j‖² = 2 − 2 z_i·z_j, so each block of rows needs one matrix
    product; the N² pairs are never held at once (50,000 CIFAR images = 2.5·10^9 pairs).
    """
    z = _normalized(features)
    n = z.shape[0]
    total = 0.0
    for start in range(0, n, block):
        rows = z[start : start + block]
        distances = (2.0 - 2.0 * rows @ z.T).clamp_min(0.0)  # (b, N) squared distances
        values = torch.exp(-2.0 * distances)
        index = torch.arange(rows.shape[0], device=z.device)
        values[index, index + start] = 0.0  # drop i == j
        total += float(values.sum())
    return total, n * (n - 1)


def uniformity(f: Tensor, block: int = 2048) -> float:
    """Eq. 4: log of the mean of exp(−2‖n(f_i) − n(f_j)‖²) over pairs of different rows i ≠ j."""
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need an (N, D) feature matrix with N >= 2, got {tuple(f.shape)}")
    total, pairs = _pair_exp_sum(f, block)
    return math.log(total / pairs)


# --- the measurement ---------------------------------------------------------------------------


@torch.no_grad()
def measure(
    net: nn.Module,
    framework: Any,
    images_uint8: Tensor,
    sigma: float,
    config: AlignUniformConfig,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[dict[str, float]]:
    """Alignment and uniformity of every decoder block for ``images_uint8`` (N, C, H, W) at σ.

    Each image's two noise draws come from its own CPU generator seeded by (``config.seed``,
    its position), so they depend neither on the device nor on ``batch_size``; results match
    across devices up to float rounding.
    """
    device = torch.device(device)
    net = net.to(device).eval()
    n = images_uint8.shape[0]
    blocks = net.decoder_blocks()
    align_sums = [0.0] * len(blocks)
    view1: list[list[Tensor]] = [[] for _ in blocks]
    sigma_batch = torch.tensor([sigma], dtype=torch.float64)
    with DecoderFeatures(net, layers=None, stop_early=True) as extract:

        def features(x0: Tensor, eps: Tensor) -> list[Tensor]:
            x = (x0 + sigma * eps).to(device)
            return extract(*framework.network_inputs(x, sigma_batch.to(device)))

        starts = range(0, n, config.batch_size)
        for start in tqdm(starts, desc="align/uniform", disable=not progress, leave=False):
            x0 = to_model_range(images_uint8[start : start + config.batch_size])
            eps1, eps2 = _noise_pair(x0.shape, start, config.seed)
            first = features(x0, eps1)
            second = features(x0, eps2)
            for k, (a, b) in enumerate(zip(first, second, strict=True)):
                align_sums[k] += alignment(a, b) * a.shape[0]
                view1[k].append(a)
    rows = []
    for k, (name, _module) in enumerate(blocks):
        rows.append(
            {
                "layer": k + 1,
                "layer_name": name,
                "alignment": align_sums[k] / n,
                "uniformity": uniformity(torch.cat(view1[k])),
            }
        )
    return rows


def _noise_pair(shape: torch.Size, start: int, seed: int) -> tuple[Tensor, Tensor]:
    """ε1, ε2 (Eq. 3) for images ``start .. start + shape[0] − 1``, one generator per image."""
    eps1, eps2 = torch.empty(shape), torch.empty(shape)
    for offset in range(shape[0]):
        state = np.random.SeedSequence([seed, start + offset]).generate_state(1, dtype=np.uint64)
        generator = torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))
        eps1[offset] = torch.randn(shape[1:], generator=generator)
        eps2[offset] = torch.randn(shape[1:], generator=generator)
    return eps1, eps2


def _subset(dataset: ImageDataset, images: int, seed: int) -> Tensor:
    n = len(dataset)
    if images == 0 or images >= n:
        if images > n:
            log.warning("asked for %d images, the training set has %d; using all", images, n)
        return dataset.images
    chosen = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:images]
    return dataset.images[chosen.sort().values]


def align_uniform(
    checkpoint: str | Path,
    train_path: str | Path,
    t: int,
    steps: int,
    config: Mapping[str, Any],
    out_csv: str | Path,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Measure Eq. 3–4 for every decoder block of ``checkpoint`` at timestep ``t``/``steps``.

    ``t``/``steps`` follow Table 9's notation (the run's chosen timestep); ``config`` is an
    `AlignUniformConfig` mapping. Writes ``out_csv`` with the module docstring's columns, one row
    per layer (1-based), and returns the rows.
    """
    settings = from_mapping(AlignUniformConfig, config, "align_uniform")
    net, framework, _run = load_network(checkpoint, weights="ema", map_location="cpu")
    sigma = framework.sigma_at_timestep(t, steps)
    dataset = ImageDataset.load(train_path)
    images = _subset(dataset, settings.images, settings.seed)
    log.info(
        "%s: alignment/uniformity of %d decoder blocks on %d training images at t=%d/%d "
        "(sigma=%.6g)",
        checkpoint,
        len(net.decoder_blocks()),
        images.shape[0],
        t,
        steps,
        sigma,
    )
    measured = measure(net, framework, images, sigma, settings, device, progress)
    rows = [{**row, "t": t, "steps": steps, "sigma": sigma} for row in measured]
    write_csv(out_csv, CSV_COLUMNS, rows)
    for row in rows:
        log.info(
            "layer %d (%s): alignment %.4f, uniformity %.4f",
            row["layer"],
            row["layer_name"],
            row["alignment"],
            row["uniformity"],
        )
    return rows
