"""All-layer DDAE features of noisy images, cached once per (checkpoint, t) (paper Sec. 3.2).

The paper reads a diffusion network as an encoder: an image x0 is perturbed to the noise level of
timestep t, x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε (Eq. 1; in this code's VE view x = x0 + σ_t·ε, see
`ddae.diffusion`), fed through the frozen (EMA) network, and the output of one decoder block is
global-average pooled into a vector ("layer k/N", Table 9). The layer and t are chosen by a grid
search of linear probes (Sec. 3.2, Figure 2, Appendix B).

What the official code does (github.com/FutureXiang/ddae) and what this module keeps:

* ``model/DDPM.py`` / ``model/EDM.py`` ``get_feature``: x in [0, 1] → [−1, 1], ``perturb`` at the
  given t with ``torch.randn_like`` noise, one forward pass returning every block's activation,
  ``gap_and_norm``: (B, C, H, W) → mean over H·W in float32, no normalisation (``norm=False``
  in ``linear.py``). DiT (``DiT/linear.py`` ``denoise_feature``): (B, tokens, 1152) → mean over
  tokens. `DecoderFeatures` does the same with forward hooks on ``net.decoder_blocks()``, so all
  layers come from one pass, and can stop the pass after the last block it needs.
* ``linear.py``: the training split is augmented with ``RandomHorizontalFlip()`` +
  ``RandomCrop(32, 4)`` and gets fresh noise in every epoch; the test split is not augmented.
  For the grid search this module instead caches K augmented *views* of the training split (the
  official DiT protocol does exactly this with 10 VAE-encoded copies, ``DiT/vae_preprocessing.py``
  ``--num_copies 10`` and ``LatentCodeDataset`` picking a random copy per item), so that every
  (layer, t) probe of Appendix B's grid trains from one feature pass per view instead of one per
  epoch.

Determinism: image i (index in its split) of view k draws its crop/flip and its noise ε from
counter-based generators keyed by (seed, split, k, i) only (`ddae.per_item`, vectorised on the
device), so features never depend on batch size, order or device count. The noise does not
depend on t: every t of a grid sees the same ε and the same augmented views (common random
numbers across the grid).

On-disk format of one cache directory (`cache_features`, read back by `load_feature_cache`):

* ``train.npy``: float16 (K, N_train, D_total), K augmented views of the training split;
* ``test.npy``: float16 (N_test, D_total), the un-augmented test split;
* ``train_labels.npy``, ``test_labels.npy``: int64;
* ``meta.json``: ``{"layers": [{"index" (1-based), "name", "offset", "dim"}], "t", "steps",
  "sigma", "views", "num_classes", "checkpoint", "config", "created_by", ...}``; layer k's
  features are columns ``offset:offset + dim``.

The arrays are written through ``numpy.lib.format.open_memmap`` (memory bounded whatever the
dataset size) into a temporary directory renamed into place at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch import Tensor, nn

from ddae import joblog
from ddae.cache_dirs import META_FILE, open_cache_dir, staged_dir
from ddae.checkpoints import load_network
from ddae.configs import from_mapping, to_mapping
from ddae.diffusion import Framework
from ddae.fast_path import FLOAT32, FastPath
from ddae.per_item import NOISE_STREAM, TEST, TRAIN, InputsFor, per_item_normal
from ddae.settings.caches import FeatureCacheConfig
from ddae.sources import Source

log = logging.getLogger(__name__)
FEATURE_DTYPE = np.float16


class FeatureError(RuntimeError):
    """A feature cache is missing, inconsistent or its values do not fit float16."""


# ---------------------------------------------------------------------------------------------
# Global-average-pooled decoder features through forward hooks.
# ---------------------------------------------------------------------------------------------


class _StopForward(Exception):
    """Raised by the last needed hook to skip the rest of the forward pass."""


def global_average_pool(activation: Tensor) -> Tensor:
    """(B, C, H, W) → mean over H, W; (B, tokens, C) → mean over tokens; float32 (B, C).

    Official ``gap_and_norm`` (model/DDPM.py) and DiT's ``feat.mean(dim=1)`` (DiT/linear.py).
    """
    if activation.dim() == 4:
        return activation.mean(dim=(2, 3), dtype=torch.float32)
    if activation.dim() == 3:
        return activation.mean(dim=1, dtype=torch.float32)
    raise FeatureError(f"cannot pool an activation of shape {tuple(activation.shape)}")


class DecoderFeatures:
    """Context manager that pools the outputs of ``net.decoder_blocks()`` during a forward pass.

    ``layers`` are 1-based indices into ``decoder_blocks()`` (the paper's "layer k/N"); None means
    all of them. Inside the ``with`` block, calling the object runs ``net(net_input, noise_labels,
    augment_labels)`` and returns the pooled (B, C_k) float32 tensors in decoder order; with
    ``stop_early`` the pass is abandoned right after the last requested block (its output and
    everything after it are never computed). Hooks are removed on exit, also after exceptions.
    """

    def __init__(
        self, net: nn.Module, layers: Sequence[int] | None = None, stop_early: bool = True
    ) -> None:
        blocks = net.decoder_blocks()
        count = len(blocks)
        chosen = list(range(1, count + 1)) if layers is None else sorted({int(k) for k in layers})
        if not chosen or chosen[0] < 1 or chosen[-1] > count:
            raise FeatureError(f"layers {list(layers or [])} are not within 1..{count}")
        self.net = net
        self.layers = chosen
        self.names = [blocks[k - 1][0] for k in chosen]
        self.num_blocks = count
        self.stop_early = stop_early
        self._modules = [blocks[k - 1][1] for k in chosen]
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._pooled: dict[int, Tensor] = {}

    def _hook(self, layer: int) -> Callable[..., None]:
        last = layer == self.layers[-1]

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, (tuple, list)):
                output = output[0]
            self._pooled[layer] = global_average_pool(output)
            if last and self.stop_early:
                raise _StopForward

        return hook

    def __enter__(self) -> DecoderFeatures:
        if self._handles:
            raise RuntimeError("DecoderFeatures is already active")
        try:
            for layer, module in zip(self.layers, self._modules, strict=True):
                self._handles.append(module.register_forward_hook(self._hook(layer)))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._remove()

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pooled.clear()

    def __call__(
        self, net_input: Tensor, noise_labels: Tensor, augment_labels: Tensor | None = None
    ) -> list[Tensor]:
        if not self._handles:
            raise RuntimeError("use DecoderFeatures inside a `with` block")
        self._pooled.clear()
        with contextlib.suppress(_StopForward):
            self.net(net_input, noise_labels, augment_labels)
        missing = [k for k in self.layers if k not in self._pooled]
        if missing:
            raise FeatureError(f"decoder blocks {missing} produced no output in the forward pass")
        pooled = [self._pooled[k] for k in self.layers]
        self._pooled.clear()
        return pooled


# ---------------------------------------------------------------------------------------------
# The pluggable extraction loop.
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def iter_features(
    framework: Framework,
    net: nn.Module,
    inputs_for: InputsFor,
    sigma: float,
    indices: Tensor,
    *,
    noise_key: Sequence[int],
    view: int,
    batch_size: int,
    device: torch.device | str,
    fast: FastPath = FLOAT32,
    layers: Sequence[int] | None = None,
    progress: bool = False,
    desc: str | None = None,
) -> Iterator[tuple[Tensor, list[Tensor]]]:
    """Yield (batch indices, pooled features per layer) over ``indices`` in batches.

    For each item i: x0 = inputs_for(view, i) (clean input in the model's data coordinates:
    images in [−1, 1], or VAE latents for DiT), ε from generator (noise_key, i), and

        x = x0 + σ·ε                         (VE view of Eq. 1; x_t = x/√(1 + σ²) for DDPM)
        (input, c_noise) = framework.network_inputs(x, σ)

    so the network sees exactly what its denoiser D(x, σ) sees. `fast` (`ddae.fast_path`): the
    switches applied as given (stages pass their config's `fast_path(device)`: CUDA only);
    features are pooled in float32 either way.
    """
    device = torch.device(device)
    starts = range(0, len(indices), batch_size)
    fast.prepare(net)
    with DecoderFeatures(net, layers) as features:
        for start in joblog.progress(starts, desc or "features", enabled=progress):
            batch = indices[start : start + batch_size]
            x0 = inputs_for(view, batch).to(device, torch.float32)
            eps = per_item_normal(noise_key, batch, x0.shape[1:], device)
            x = x0 + sigma * eps
            sigmas = torch.full((x.shape[0],), sigma, dtype=torch.float64, device=device)
            net_input, noise_labels = framework.network_inputs(x, sigmas)
            with fast.running(device.type):
                pooled = features(fast.activations(net_input), noise_labels)
            yield batch, pooled


# ---------------------------------------------------------------------------------------------
# The cache on disk.
# ---------------------------------------------------------------------------------------------


@dataclass
class FeatureCache:
    """A cache directory opened read-only: memory-mapped arrays and meta.json."""

    path: Path
    train: np.ndarray  # float16 (K, N_train, D_total) memmap
    test: np.ndarray  # float16 (N_test, D_total) memmap
    train_labels: np.ndarray  # int64 (N_train,)
    test_labels: np.ndarray  # int64 (N_test,)
    meta: dict[str, Any]

    @property
    def layers(self) -> list[dict[str, Any]]:
        return self.meta["layers"]


def _fp16_rows(pooled: list[Tensor], where: str) -> np.ndarray:
    features = torch.cat(pooled, dim=1)
    half = features.to(torch.float16)
    if not torch.isfinite(half).all():
        raise FeatureError(
            f"{where}: features exceed the float16 range (max |x| = "
            f"{features.abs().max().item():.3g}) or are not finite"
        )
    return half.cpu().numpy()


def _layout(pooled: list[Tensor]) -> list[dict[str, int]]:
    offsets = np.cumsum([0] + [p.shape[1] for p in pooled]).tolist()
    return [{"offset": o, "dim": p.shape[1]} for o, p in zip(offsets, pooled, strict=False)]


def write_feature_cache(
    out_dir: str | Path,
    *,
    framework: Framework,
    net: nn.Module,
    sigma: float,
    train_inputs: InputsFor,
    train_labels: Tensor,
    test_inputs: InputsFor,
    test_labels: Tensor,
    num_classes: int,
    config: FeatureCacheConfig,
    meta: Mapping[str, Any],
    device: torch.device | str,
    progress: bool = False,
) -> Path:
    """Extract and store K training views and the test split at one σ (the reusable core).

    ``train_inputs(view, indices)`` returns the clean inputs of view ``view`` (augmented images,
    or e.g. DiT's precomputed VAE latents of copy ``view``); ``test_inputs(0, indices)`` the test
    split. Item noise is seeded by (config.seed, split, view, i). ``meta`` is merged into
    meta.json (t, steps, checkpoint, created_by, ...). Returns the final directory.
    """
    out_dir = Path(out_dir)
    fast = config.fast_path(device)  # the config's switches that act on this device
    with staged_dir(out_dir) as tmp:
        blocks = net.decoder_blocks()
        common = {
            "framework": framework,
            "net": net,
            "sigma": sigma,
            "batch_size": config.batch_size,
            "device": device,
            "fast": fast,
            "progress": progress,
        }
        num_train, num_test = len(train_labels), len(test_labels)
        train_array = test_array = None
        layout: list[dict[str, int]] = []
        for view in range(config.views):
            batches = iter_features(
                inputs_for=train_inputs,
                indices=torch.arange(num_train),
                noise_key=(config.seed, TRAIN, view, NOISE_STREAM),
                view=view,
                desc=f"train view {view + 1}/{config.views}",
                **common,
            )
            for batch, pooled in batches:
                rows = _fp16_rows(pooled, f"{out_dir} train view {view}")
                if train_array is None:
                    layout = _layout(pooled)
                    shape = (config.views, num_train, rows.shape[1])
                    train_array = open_memmap(tmp / "train.npy", "w+", FEATURE_DTYPE, shape)
                train_array[view, batch.numpy()] = rows
        batches = iter_features(
            inputs_for=test_inputs,
            indices=torch.arange(num_test),
            noise_key=(config.seed, TEST, 0, NOISE_STREAM),
            view=0,
            desc="test",
            **common,
        )
        for batch, pooled in batches:
            rows = _fp16_rows(pooled, f"{out_dir} test")
            if test_array is None:
                if _layout(pooled) != layout:
                    raise FeatureError(f"{out_dir}: train and test feature layouts differ")
                test_array = open_memmap(
                    tmp / "test.npy", "w+", FEATURE_DTYPE, (num_test, rows.shape[1])
                )
            test_array[batch.numpy()] = rows
        if train_array is None or test_array is None:
            raise FeatureError(f"{out_dir}: the train and test splits must not be empty")
        train_array.flush()
        test_array.flush()
        del train_array, test_array
        np.save(tmp / "train_labels.npy", train_labels.cpu().numpy().astype(np.int64))
        np.save(tmp / "test_labels.npy", test_labels.cpu().numpy().astype(np.int64))
        layers = [{"index": k + 1, "name": blocks[k][0], **entry} for k, entry in enumerate(layout)]
        record = {
            "layers": layers,
            "sigma": sigma,
            "views": config.views,
            "num_train": num_train,
            "num_test": num_test,
            "num_classes": num_classes,
            "dtype": "float16",
            "config": to_mapping(config),
            "ran_with": fast.record(device),
            **meta,
        }
        (tmp / META_FILE).write_text(json.dumps(record, indent=2) + "\n")
    log.info(
        "cached %d layers at t = %s/%s (sigma %.4g): %d training items x %d views, %d test "
        "items in %s",
        len(layers),
        meta.get("t"),
        meta.get("steps"),
        sigma,
        num_train,
        config.views,
        num_test,
        out_dir,
    )
    return out_dir


def cache_features(
    checkpoint: str | Path,
    source: Source,
    t: int,
    steps: int,
    config: Mapping[str, Any],
    out_dir: str | Path,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> Path:
    """Cache all-layer features of a checkpoint's EMA network at timestep t/steps (Table 9).

    σ = framework.sigma_at_timestep(t, steps); K training views of the ``source``
    (`ddae.sources`: flip + crop views of images, or the first K cached latent versions, whose
    augmentation is baked in) and its un-augmented test split, float16, in ``out_dir`` (format:
    module docstring).
    """
    cfg = from_mapping(FeatureCacheConfig, config, "features")
    device = torch.device(device)
    net, framework, run = load_network(checkpoint, "ema", map_location=device, frozen=True)
    source.check_network(run["network"], str(checkpoint))
    return write_feature_cache(
        out_dir,
        framework=framework,
        net=net,
        sigma=framework.sigma_at_timestep(t, steps),
        train_inputs=source.train_views(cfg, device),
        train_labels=source.train_labels,
        test_inputs=source.test_inputs(device),
        test_labels=source.test_labels,
        num_classes=source.num_classes,
        config=cfg,
        meta={
            "t": t,
            "steps": steps,
            "checkpoint": str(checkpoint),
            **source.record(),
            "created_by": "ddae.features.cache_features",
        },
        device=device,
        progress=progress,
    )


def load_feature_cache(path: str | Path) -> FeatureCache:
    """Open a directory written by `write_feature_cache` (arrays memory-mapped read-only)."""
    path = Path(path)
    cache = open_cache_dir(path, FeatureCache, FeatureError, "feature")
    meta = cache.meta
    total = sum(layer["dim"] for layer in meta["layers"])
    views, num_train = meta["views"], len(cache.train_labels)
    if cache.train.shape != (views, num_train, total) or cache.test.shape != (
        len(cache.test_labels),
        total,
    ):
        raise FeatureError(
            f"{path}: arrays {cache.train.shape}, {cache.test.shape} do not match meta.json"
        )
    return cache


def feature_bytes(cache: FeatureCache) -> int:
    """Bytes the cache's train and test arrays occupy once loaded."""
    return int(math.prod(cache.train.shape) + math.prod(cache.test.shape)) * 2
