"""Latent-space DiT transfer (paper Sec. 4.2, Tables 3 and 4; Appendix A; Table 9 "@256").

The paper transfers the ImageNet-256 DiT-XL/2 to CIFAR-10 and Tiny-ImageNet: images are resized
to 256², encoded by the Stable Diffusion VAE (ft-MSE, down-sampling factor 8) into 4×32×32
latents, and "we store the extracted latent codes through the VAE encoder and train DiTs in an
offline manner. We encode 10 versions of the training set with data augmentations and randomly
sample one version per epoch" (Appendix A). The official code (FutureXiang/ddae
``DiT/vae_preprocessing.py``) encodes ``0.18215 × vae.encode(2x − 1).latent_dist.sample()``.

* `cache_latents`: K augmented versions of the training split (flip + pad-4 crop at the native
  resolution, THEN bilinear resize to 256) and one of the test split, as float16 arrays written
  through ``numpy.lib.format.open_memmap`` (memory bounded). Image i of version k draws its
  flip/crop and its posterior sample ε from generators seeded by (seed, split, k, stream, i), so
  the cache does not depend on batch size or device.
* `load_latents`, `latent_inputs`: the cache read back, as the inputs of `ddae.sources`'
  `LatentSource`, through which a DiT goes the pixel-space networks' stages: features of all 28
  blocks (mean over tokens, DDPM framework with T = 1000, linear β) for the grid search, the
  final probe of Tables 3/4 with the frozen DiT in the loop (as the official ``DiT/linear.py``:
  each epoch every image uses one randomly chosen latent version and fresh noise) and
  fine-tuning (Table 7).

Layer numbering: "layer k" is ``decoder_blocks()[k − 1]`` = DiT ``blocks.<k−1>`` (k blocks deep),
and timesteps follow this project's 1-based "t/steps" (`ddae.diffusion.DDPM`: ᾱ index t − 1,
network label t − 1), as for every network. The paper's DiT numbers are the authors' 0-based
ones (``DiT/linear.py``: ``layer-{idx}`` = ``blocks[idx]``, ``q_sample`` at ᾱ index t): Table 9's
"12/28, t = 121" is layer 13, t = 122 here, "13/28, t = 91" is layer 14, t = 92 (see
`ddae.networks.dit` for the encoder sizes that settle it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.lib.format import open_memmap
from torch import Tensor, nn
from tqdm.auto import tqdm

from ddae.cache_dirs import META_FILE, open_cache_dir, staged_dir
from ddae.configs import from_mapping, to_mapping
from ddae.datasets.format import ImageDataset
from ddae.downloads import file_md5
from ddae.fast_path import FLOAT32, FastPath
from ddae.per_item import TEST, TRAIN, InputsFor, image_inputs, per_item_normal
from ddae.settings.caches import LatentCacheConfig

log = logging.getLogger(__name__)

POSTERIOR_STREAM = 4  # seeds each image's VAE posterior sample (distinct from features' streams)
LATENT_DTYPE = np.float16


class LatentError(RuntimeError):
    """A latent cache is missing, inconsistent or its values do not fit float16."""


@dataclass
class LatentCache:
    """A latent cache opened read-only (memory-mapped)."""

    path: Path
    train: np.ndarray  # float16 (K, N_train, 4, h, w)
    test: np.ndarray  # float16 (N_test, 4, h, w)
    train_labels: np.ndarray
    test_labels: np.ndarray
    meta: dict[str, Any]


def load_vae(path: str | Path, device: torch.device | str = "cpu") -> nn.Module:
    """The SD VAE from a local diffusers folder (config.json + weights); no hub access."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(Path(path), local_files_only=True)
    return vae.to(device).eval().requires_grad_(False)


def resize_images(images: Tensor, size: int) -> Tensor:
    """Bilinear resize of (B, C, H, W) floats to size² (torchvision Resize, half-pixel centres)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )


@torch.no_grad()
def encode_latents(
    vae: nn.Module,
    images: Tensor,
    eps: Tensor | None,
    scale: float,
    fast: FastPath = FLOAT32,
) -> Tensor:
    """scale · (μ + σ·ε) of the VAE posterior for images (B, 3, S, S) in [−1, 1], float32.

    ``eps`` (B, 4, S/8, S/8) is the posterior noise (None: the mean). `fast`: the switches
    applied as given (`ddae.fast_path`; `vae` already `fast.prepare`d).
    """
    device = images.device
    with fast.running(device.type):
        posterior = vae.encode(fast.activations(images)).latent_dist
    mean, std = posterior.mean.float(), posterior.std.float()
    latents = mean if eps is None else mean + std * eps.to(mean.device)
    return scale * latents


def _encode_split(
    vae: nn.Module,
    inputs: InputsFor,
    num_items: int,
    key: tuple[int, int],
    view: int,
    config: LatentCacheConfig,
    fast: FastPath,
    target: np.ndarray,
    device: torch.device,
    progress: bool,
    desc: str,
) -> None:
    latent_side = config.image_size // 8
    channels = int(vae.config.latent_channels)
    for start in tqdm(
        range(0, num_items, config.batch_size),
        desc=desc,
        leave=False,
        disable=None if progress else True,
    ):
        indices = torch.arange(start, min(start + config.batch_size, num_items))
        images = resize_images(inputs(view, indices).to(device), config.image_size)
        eps = per_item_normal(
            (*key, view, POSTERIOR_STREAM), indices, (channels, latent_side, latent_side), device
        )
        latents = encode_latents(vae, images, eps, config.scale, fast)
        half = latents.to(torch.float16)
        if not torch.isfinite(half).all():
            raise LatentError(f"{desc}: latents do not fit float16")
        target[indices.numpy()] = half.cpu().numpy()


def cache_latents(
    vae_dir: str | Path,
    train_path: str | Path,
    test_path: str | Path,
    config: Mapping[str, Any],
    out_dir: str | Path,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> Path:
    """Encode K augmented training versions and the test split into ``out_dir`` (App. A).

    Files: ``train.npy`` float16 (K, N_train, 4, S/8, S/8), ``test.npy`` float16 (N_test, ...),
    ``train_labels.npy``, ``test_labels.npy`` (int64) and ``meta.json``. Written to a temporary
    directory renamed into place at the end.
    """
    cfg = from_mapping(LatentCacheConfig, config, "latents")
    device = torch.device(device)
    fast = cfg.fast_path(device)  # the config's switches that act on this device
    vae = fast.prepare(load_vae(vae_dir, device))
    train, test = ImageDataset.load(train_path), ImageDataset.load(test_path)
    out_dir = Path(out_dir)
    side = cfg.image_size // 8
    channels = int(vae.config.latent_channels)
    with staged_dir(out_dir) as tmp:
        train_array = open_memmap(
            tmp / "train.npy", "w+", LATENT_DTYPE, (cfg.views, len(train), channels, side, side)
        )
        train_inputs = image_inputs(
            train.images.to(device),
            hflip=cfg.hflip,
            crop_padding=cfg.crop_padding,
            key=(cfg.seed, TRAIN),
        )
        for view in range(cfg.views):
            _encode_split(
                vae,
                train_inputs,
                len(train),
                (cfg.seed, TRAIN),
                view,
                cfg,
                fast,
                train_array[view],
                device,
                progress,
                f"train version {view + 1}/{cfg.views}",
            )
        train_array.flush()
        del train_array
        test_array = open_memmap(
            tmp / "test.npy", "w+", LATENT_DTYPE, (len(test), channels, side, side)
        )
        test_inputs = image_inputs(test.images.to(device), hflip=False, crop_padding=0, key=None)

        _encode_split(
            vae,
            test_inputs,
            len(test),
            (cfg.seed, TEST),
            0,
            cfg,
            fast,
            test_array,
            device,
            progress,
            "test",
        )
        test_array.flush()
        del test_array
        np.save(tmp / "train_labels.npy", train.labels.numpy().astype(np.int64))
        np.save(tmp / "test_labels.npy", test.labels.numpy().astype(np.int64))
        meta = {
            "views": cfg.views,
            "num_train": len(train),
            "num_test": len(test),
            "num_classes": len(train.classes),
            "latent_shape": [channels, side, side],
            "dtype": "float16",
            "vae": str(vae_dir),
            "train": str(train_path),
            "test": str(test_path),
            "config": to_mapping(cfg),
            "ran_with": fast.record(device),
            "created_by": "ddae.latents.cache_latents",
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    log.info("cached %d latent versions of %s in %s", cfg.views, train_path, out_dir)
    return out_dir


def load_latents(path: str | Path) -> LatentCache:
    """Open a directory written by `cache_latents` (arrays memory-mapped read-only)."""
    path = Path(path)
    cache = open_cache_dir(path, LatentCache, LatentError, "latent")
    meta = cache.meta
    expected = (meta["views"], meta["num_train"], *meta["latent_shape"])
    if cache.train.shape != expected or len(cache.test) != meta["num_test"]:
        raise LatentError(f"{path}: arrays {cache.train.shape} do not match meta.json {expected}")
    return cache


def latent_inputs(array: np.ndarray, copies: Tensor | None = None) -> InputsFor:
    """``inputs_for`` over cached latents for `ddae.features`.

    ``array`` is (K, N, ...) (training versions) or (N, ...) (test). With (K, N, ...) and no
    ``copies``, view k reads version k; with ``copies`` (E, N) view e reads version
    ``copies[e, i]`` for item i (one random version per item and epoch).
    """

    def inputs_for(view: int, indices: Tensor) -> Tensor:
        rows = indices.numpy()
        if array.ndim == 4:  # test split (N, C, h, w)
            picked = array[rows]
        elif copies is None:
            if view >= array.shape[0]:
                raise LatentError(f"view {view} but only {array.shape[0]} latent versions")
            picked = array[view, rows]
        else:
            picked = array[copies[view, indices].numpy(), rows]
        return torch.from_numpy(np.ascontiguousarray(picked)).to(torch.float32)

    return inputs_for


def latent_fingerprint(path: str | Path) -> dict[str, Any]:
    """What identifies a latent cache for resuming: md5 of meta, labels and test latents, and
    the size and modification time of the (large) training array."""
    path = Path(path)
    train = (path / "train.npy").stat()
    return {
        **{name: file_md5(path / name) for name in (META_FILE, *_SMALL_FILES)},
        "train.npy": [train.st_size, train.st_mtime_ns],
    }


_SMALL_FILES = ("train_labels.npy", "test_labels.npy", "test.npy")
