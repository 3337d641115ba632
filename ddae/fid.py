"""Sample quality: FID of 50,000 samples (paper Sec. 4 with Figures 4–5 and Table 2).

The paper reports FID (Heusel et al. 2017) of 50k samples against the training set, sampling
DDPM networks with 100-step DDIM and EDM networks with EDM's 18-level Heun sampler. What the
authors measured with: pytorch-fid on PNG files (FutureXiang/ddae README: "pip install
pytorch-fid", ``extract_cifar10_pngs.ipynb`` unpacks the training set to 50,000 PNGs), and for
EDM's official checkpoint EDM's own ``fid.py`` (NVlabs/edm). What we do instead: clean-fid's
"clean" Inception features (`ddae.fid_networks`: the same TF-Inception 2015-12-05 weights
as EDM's fid.py, with clean-fid's antialiased resize), computed on the uint8 samples in memory
without PNG files, so one extractor serves every run and nothing depends on a PIL/PNG round trip.
pytorch-fid's port of the network and its resize differ slightly, so our FIDs are comparable with
one another but only approximately with the paper's numbers. Per run, `SamplingConfig` also
chooses x0 clipping (`ddae.sampling`), as the authors' samplers clip and EDM's does not, and
DDIM's ᾱ table on a DDPM (the authors' by default); the FID JSON records both.

This module:

* `write_reference_statistics`: feature mean and covariance of a dataset's training split;
* `sample_and_score`: draws `SamplingConfig.samples` images from a checkpoint's EMA network
  (image i seeded with seed + i, so results do not depend on the batch size), streams their
  features into running statistics (no images or PNG files are kept), and writes the FID JSON
  plus an 8×8 sample grid;
* `frechet_distance`: our own float64 Fréchet distance. tr √(Σ1 Σ2) is the trace of the square
  root of the symmetric PSD matrix √Σ1 Σ2 √Σ1 (similar to Σ1 Σ2), i.e. the sum of the singular
  values of √Σ2 √Σ1 (the PSD square roots from `eigh`, tiny negative eigenvalues clamped to 0).
  It does not depend on scipy's `sqrtm(disp=...)`, which SciPy 1.18 removes, agrees with
  clean-fid's `frechet_distance`, and stays exact (≈ 0 for a set against itself) when the
  covariances are rank-deficient, where `sqrtm` returns complex noise.

Feature extractors (Inception as in clean-fid's "clean" mode, or the offline "random_conv")
live in `ddae.fid_networks`; every statistics file and result names the one it used, and
an FID against a reference made by another extractor is refused.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn
from tqdm import tqdm

from ddae.checkpoints import load_network
from ddae.configs import from_mapping, to_mapping
from ddae.datasets.format import ImageDataset
from ddae.diffusion import Framework
from ddae.fast_path import FastPath
from ddae.fid_networks import FeatureError, build_extractor
from ddae.result_writers import atomic_output, write_json
from ddae.sampling import ddim_table_of, sample_images
from ddae.settings.sampling import SamplingConfig

log = logging.getLogger(__name__)

GRID_COLUMNS = 8
GRID_IMAGES = 64  # the first 64 samples, 8×8


class FIDError(FeatureError):
    """Statistics files are missing, corrupt or incompatible (e.g. another extractor)."""


# ---------------------------------------------------------------------------------------------
# Statistics and the Fréchet distance.
# ---------------------------------------------------------------------------------------------


class FeatureStatistics:
    """Streaming mean and covariance of feature batches (Chan et al.'s pairwise update, float64).

    `covariance` uses the unbiased N − 1 normalisation, as ``np.cov`` and clean-fid do.
    """

    def __init__(self) -> None:
        self.count = 0
        self._mean: Tensor | None = None
        self._m2: Tensor | None = None  # Σ (x − mean)(x − mean)ᵀ

    def update(self, features: Tensor | np.ndarray) -> None:
        x = torch.as_tensor(features).to(torch.float64)
        if x.dim() != 2:
            raise ValueError(f"features must be (N, D), got shape {tuple(x.shape)}")
        n = x.shape[0]
        if n == 0:
            return
        batch_mean = x.mean(dim=0)
        centered = x - batch_mean
        batch_m2 = centered.T @ centered
        if self._mean is None:
            self.count, self._mean, self._m2 = n, batch_mean, batch_m2
            return
        if x.shape[1] != self._mean.shape[0]:
            raise ValueError(
                f"feature dimension changed from {self._mean.shape[0]} to {x.shape[1]}"
            )
        total = self.count + n
        delta = batch_mean.to(self._mean.device) - self._mean
        self._mean = self._mean + delta * (n / total)
        self._m2 = (
            self._m2
            + batch_m2.to(self._m2.device)
            + torch.outer(delta, delta) * (self.count * n / total)
        )
        self.count = total

    @property
    def mean(self) -> np.ndarray:
        if self._mean is None:
            raise ValueError("no features were added")
        return self._mean.cpu().numpy()

    @property
    def covariance(self) -> np.ndarray:
        if self._m2 is None or self.count < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.count}")
        return (self._m2 / (self.count - 1)).cpu().numpy()


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """‖μ1 − μ2‖² + tr Σ1 + tr Σ2 − 2 tr √(Σ1 Σ2), in float64 (see the module docstring)."""
    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(
            f"incompatible statistics: means {mu1.shape} vs {mu2.shape}, "
            f"covariances {sigma1.shape} vs {sigma2.shape}"
        )
    sigma1, sigma2 = (sigma1 + sigma1.T) / 2, (sigma2 + sigma2.T) / 2
    # √Σ1 Σ2 √Σ1 = AᵀA with A = √Σ2 √Σ1, so the square roots of its eigenvalues are A's singular
    # values: no square root of rounding noise in (near-)null directions.
    trace_sqrt = np.linalg.svd(_psd_sqrt(sigma2) @ _psd_sqrt(sigma1), compute_uv=False).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


@dataclass(frozen=True)
class ReferenceStatistics:
    mu: np.ndarray
    sigma: np.ndarray
    count: int
    extractor: str
    path: Path


def save_statistics(
    path: str | Path, stats: FeatureStatistics, extractor: str, source: str | Path
) -> None:
    """Write mu, sigma, count, extractor and source (the images' file) as an ``.npz``."""
    with atomic_output(Path(path)) as handle:
        np.savez(
            handle,
            mu=stats.mean,
            sigma=stats.covariance,
            count=np.int64(stats.count),
            extractor=np.str_(extractor),
            source=np.str_(str(source)),
        )


def load_statistics(path: str | Path) -> ReferenceStatistics:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return ReferenceStatistics(
                mu=archive["mu"],
                sigma=archive["sigma"],
                count=int(archive["count"]),
                extractor=str(archive["extractor"]),
                path=path,
            )
    except FileNotFoundError as error:
        raise FIDError(f"{path}: reference statistics not found") from error
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise FIDError(f"{path}: not a valid statistics file ({error})") from error


# ---------------------------------------------------------------------------------------------
# The two pipeline steps.
# ---------------------------------------------------------------------------------------------


def _batches(total: int, batch_size: int, progress: bool, desc: str) -> tqdm:
    return tqdm(
        range(0, total, batch_size), desc=desc, disable=not progress, unit="batch", leave=False
    )


def write_reference_statistics(
    train_path: str | Path,
    output_npz: str | Path,
    extractor: str,
    weights: str | Path | None,
    batch_size: int,
    device: torch.device | str,
    progress: bool = True,
) -> ReferenceStatistics:
    """Feature statistics of a dataset's training split (the FID reference, paper Sec. 4)."""
    extract = build_extractor(extractor, weights, device)
    images = ImageDataset.load(train_path).images
    stats = FeatureStatistics()
    for start in _batches(len(images), batch_size, progress, f"{extractor} features"):
        stats.update(extract(images[start : start + batch_size]))
    save_statistics(output_npz, stats, extractor, train_path)
    log.info("%s: statistics of %d images with %s", output_npz, stats.count, extractor)
    return load_statistics(output_npz)


def to_uint8(images: Tensor) -> Tensor:
    """[−1, 1] floats → uint8 as EDM's generate.py: (x·127.5 + 128) clipped, truncated."""
    return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def save_grid(images: Tensor, path: str | Path, columns: int = GRID_COLUMNS) -> None:
    """uint8 (N, C, H, W) images tiled row by row into one PNG (1-pixel black borders)."""
    n, c, h, w = images.shape
    rows = -(-n // columns)
    grid = np.zeros((rows * (h + 1) + 1, columns * (w + 1) + 1, c), np.uint8)
    for i, image in enumerate(images.cpu().numpy()):
        r, col = divmod(i, columns)
        y, x = 1 + r * (h + 1), 1 + col * (w + 1)
        grid[y : y + h, x : x + w] = image.transpose(1, 2, 0)
    picture = Image.fromarray(grid[..., 0] if c == 1 else grid)
    with atomic_output(Path(path)) as handle:
        picture.save(handle, format="PNG")


def _sample_batch(
    framework: Framework,
    net: nn.Module,
    shape: tuple[int, int, int],
    config: SamplingConfig,
    fast: FastPath,
    start: int,
    device: torch.device,
) -> Tensor:
    """uint8 samples start..start + batch_size of the run (image i seeded with seed + i), the
    network evaluated with `fast` (the config's switches that act on `device`)."""
    stop = min(start + config.batch_size, config.samples)
    images = sample_images(
        framework,
        net,
        shape,
        range(config.seed + start, config.seed + stop),
        sampler=config.sampler,
        steps=config.steps,
        device=device,
        fast=fast,
        clip_denoised=config.clip_denoised,
        ddim_table=config.ddim_table,
    )
    return to_uint8(images)


class ScoringQueue:
    """Features of sampled batches into `FeatureStatistics`, optionally in the background.

    With ``overlap`` the extractor (clean-fid's CPU resize to 299², then Inception) scores batch
    k on one worker thread, on its own CUDA stream, while the caller samples batch k + 1; at
    most one batch waits, and batches enter the statistics in submission order, so the result
    is the same as scoring in series. The extractors run their networks at the process's own
    precision whatever the sampler's TF32 switch (`ddae.fast_path.tf32_matmul` holds a lock),
    as the reference statistics were made. Without overlap, `submit` scores at once.
    """

    def __init__(
        self,
        extract: Callable[[Tensor], Tensor],
        stats: FeatureStatistics,
        device: torch.device,
        overlap: bool,
    ) -> None:
        self.extract, self.stats = extract, stats
        self._worker = ThreadPoolExecutor(1, "fid-scoring") if overlap else None
        cuda = overlap and device.type == "cuda"
        self._stream = torch.cuda.Stream(device) if cuda else None
        self._pending: Future[None] | None = None

    def _score(self, images: Tensor) -> None:
        stream = torch.cuda.stream(self._stream) if self._stream else contextlib.nullcontext()
        with stream:
            self.stats.update(self.extract(images))
        if self._stream is not None:
            self._stream.synchronize()

    def submit(self, images: Tensor) -> None:
        """Score uint8 images (N, C, H, W); with overlap they are copied to the host first,
        so the worker never reads a tensor the sampling stream may still be writing."""
        if self._worker is None:
            self._score(images)
            return
        images = images.cpu()
        self.wait()
        self._pending = self._worker.submit(self._score, images)

    def wait(self) -> None:
        """Block until every submitted batch is in the statistics (re-raises its error)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def __enter__(self) -> ScoringQueue:
        return self

    def __exit__(self, error_type: type[BaseException] | None, *_: object) -> None:
        try:
            if error_type is None:
                self.wait()
        finally:
            if self._worker is not None:
                self._worker.shutdown(wait=True, cancel_futures=True)


def noise_reference_fid(
    extract: Callable[[Tensor], Tensor],
    reference: ReferenceStatistics,
    config: SamplingConfig,
    shape: tuple[int, int, int],
    device: torch.device,
) -> float:
    """FID of `config.samples` Gaussian-noise images (N(0, 1) pixels clipped to [−1, 1], the
    generator seeded with `config.seed`) against the same reference: the score of samples that
    learned nothing (`SamplingConfig.noise_reference`, not in the paper)."""
    generator = torch.Generator().manual_seed(config.seed)
    stats = FeatureStatistics()
    for start in range(0, config.samples, config.batch_size):
        count = min(config.batch_size, config.samples - start)
        noise = torch.randn((count, *shape), generator=generator).clamp(-1.0, 1.0)
        stats.update(extract(to_uint8(noise).to(device)))
    return frechet_distance(stats.mean, stats.covariance, reference.mu, reference.sigma)


def sample_and_score(
    checkpoint: str | Path,
    reference_npz: str | Path,
    output_json: str | Path,
    grid_png: str | Path,
    sampling: Mapping[str, Any],
    extractor: str,
    weights: str | Path | None,
    device: torch.device | str,
    progress: bool = True,
    overlap_scoring: bool | None = None,
) -> dict[str, Any]:
    """FID of `sampling.samples` EMA samples of `checkpoint` against `reference_npz`.

    `overlap_scoring`: extract features of one batch while the next samples (`ScoringQueue`;
    None: on CUDA, where sampling is GPU work and clean-fid's resize CPU work).
    """
    config = from_mapping(SamplingConfig, sampling, "sampling")
    reference = load_statistics(reference_npz)
    if reference.extractor != extractor:
        raise FIDError(
            f"{reference_npz} holds {reference.extractor!r} statistics but {output_json} is "
            f"to be scored with {extractor!r}; rebuild the reference with the same extractor"
        )
    extract = build_extractor(extractor, weights, device)
    net, framework, _ = load_network(checkpoint, "ema", map_location=device)
    ddim_table = ddim_table_of(framework, config.sampler, config.ddim_table)  # before sampling
    shape = (net.config.in_channels, net.config.resolution, net.config.resolution)
    stats = FeatureStatistics()
    grid: list[Tensor] = []
    batches = _batches(config.samples, config.batch_size, progress, f"{config.sampler} samples")
    device = torch.device(device)
    fast = config.fast_path(device)
    overlap = device.type == "cuda" if overlap_scoring is None else overlap_scoring
    with ScoringQueue(extract, stats, device, overlap) as scoring:
        for start in batches:
            images = _sample_batch(framework, net, shape, config, fast, start, device)
            if sum(len(g) for g in grid) < GRID_IMAGES:
                grid.append(images[: GRID_IMAGES - sum(len(g) for g in grid)].cpu())
            scoring.submit(images)
    if stats.mean.shape != reference.mu.shape:
        raise FIDError(
            f"{reference_npz}: {reference.mu.shape[0]}-d features, "
            f"the samples gave {stats.mean.shape[0]}-d ones"
        )
    fid = frechet_distance(stats.mean, stats.covariance, reference.mu, reference.sigma)
    noise_fid = None
    if config.noise_reference:
        noise_fid = noise_reference_fid(extract, reference, config, shape, device)
    save_grid(torch.cat(grid), grid_png)
    result = {
        "fid": fid,
        "extractor": extractor,
        "samples": stats.count,
        "sampler": config.sampler,
        "steps": config.steps,
        "clip_denoised": config.clip_denoised,
        # the DDIM variant sampled ("authors" / "training"; null: not DDIM on a DDPM)
        "ddim_table": ddim_table,
        "reference": str(reference_npz),
        "reference_count": reference.count,
        "noise_fid": noise_fid,  # FID of Gaussian-noise images (config noise_reference)
        "weights": None if weights is None else str(weights),
        "checkpoint": str(checkpoint),
        "config": to_mapping(config),
        "ran_with": fast.record(device),  # the config's switches act on CUDA only
        "created_by": "ddae.fid.sample_and_score",
    }
    write_json(output_json, result)
    log.info("%s: FID %.3f (%s, %d samples)", output_json, fid, extractor, stats.count)
    return result
