"""Per-item seeded randomness: every item's augmentation and noise from its own key (Sec. 3.2).

The paper's features are those of noisy, augmented images (Sec. 3.2, App. B: the official
linear.py draws ``RandomHorizontalFlip()`` + ``RandomCrop(32, 4)`` and ``torch.randn_like``
noise). Here item i (its index in its split) of view k draws its crop/flip and its noise ε from
counter-based generators keyed by (seed, split, k, stream, i) only, so features, probes and
alignment never depend on batch size, order or device count, and every t of a grid sees the same
ε and the same augmented views (common random numbers across the grid):

* `item_seeds`: 63-bit seeds from a SplitMix64 chain over the key and the item index;
* `per_item_normal`: ε on the device (a 32-bit counter hash, then Box–Muller), vectorised;
* `per_item_crop_flip`: flip flag and crop offsets with torchvision's distribution;
* `image_inputs`: a uint8 image split as ``inputs_for(view, indices)``, the clean model inputs
  of items in view k (the `InputsFor` contract of `ddae.features.iter_features`; a source's
  views, `ddae.sources`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ddae.batching import CropFlip, apply_crop_flip, to_model_range

TRAIN, TEST = 0, 1  # split codes in the per-item seeds
AUGMENT_STREAM, NOISE_STREAM = 0, 1  # independent streams per item: crop/flip, then ε
VIEW_STREAM = 2  # seeds the per-epoch choice of a cached view or latent version

InputsFor = Callable[[int, Tensor], Tensor]  # (view, CPU indices) → x0 (B, C, H, W) on device

_MASK64 = (1 << 64) - 1


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 arrays (wrapping arithmetic): a fast, well-mixed hash."""
    with np.errstate(over="ignore"):
        z = values + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def item_seeds(key: Sequence[int], indices: Tensor | np.ndarray) -> np.ndarray:
    """63-bit generator seeds of items ``indices`` under ``key`` (seed, split, view, stream).

    h = mix(…mix(mix(seed) ⊕ k1)… ⊕ i): different keys or items give unrelated streams.
    """
    state = np.zeros(1, dtype=np.uint64)
    for part in key:
        state = _splitmix64(state ^ np.uint64(int(part) & _MASK64))
    items = np.asarray(indices, dtype=np.int64).astype(np.uint64)
    return _splitmix64(state ^ items) >> np.uint64(1)


_MASK32 = 0xFFFFFFFF


def _mul32(x: Tensor, constant: int) -> Tensor:
    """(x · constant) mod 2³² for int64 x in [0, 2³²), with every intermediate below 2⁴⁹."""
    low = x * (constant & 0xFFFF)
    high = ((x * (constant >> 16)) & 0xFFFF) << 16
    return (low + high) & _MASK32


def _hash32(x: Tensor) -> Tensor:
    """Wellons' "lowbias32" integer hash on int64 tensors holding 32-bit values."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _uniform(counter: Tensor, k0: Tensor, k1: Tensor) -> Tensor:
    """Counter-based uniforms in (0, 1) (24 bits): three hash rounds keyed by (k0, k1)."""
    h = _hash32(_hash32(_hash32(counter ^ k0) ^ k1) ^ k0)
    return ((h >> 8).to(torch.float32) + 0.5) * 2.0**-24


def per_item_normal(
    key: Sequence[int], indices: Tensor, shape: Sequence[int], device: torch.device | str = "cpu"
) -> Tensor:
    """(len(indices), *shape) float32 N(0, I) noise; item i's is a function of (key, i) alone.

    A counter-based generator (like Philox, the idea behind JAX's and CUDA's keyed RNGs), fully
    vectorised on ``device``: item i gets the 63-bit key h = `item_seeds`(key, i); element pair j
    gets uniforms u₁, u₂ = hash(2j; h), hash(2j + 1; h) and Box–Muller
    z = √(−2 ln u₁)·(cos 2πu₂, sin 2πu₂). The integers are exact on every device, so the noise
    agrees across devices up to the float rounding of log/cos/sin (|z| ≤ 5.9 by the 24-bit u₁).
    """
    device = torch.device(device)
    chunk = max(1, (1 << 17) // max(1, math.prod(shape)))  # CPU: keep temporaries in cache
    if device.type == "cpu" and len(indices) > chunk:
        parts = [indices[i : i + chunk] for i in range(0, len(indices), chunk)]
        return torch.cat([per_item_normal(key, part, shape, device) for part in parts])
    seeds = item_seeds(key, indices)
    k0 = torch.from_numpy((seeds & np.uint64(_MASK32)).astype(np.int64)).to(device)[:, None]
    k1 = torch.from_numpy((seeds >> np.uint64(32)).astype(np.int64)).to(device)[:, None]
    numel = math.prod(shape)
    pairs = torch.arange((numel + 1) // 2, dtype=torch.int64, device=device)[None, :]
    radius = (-2.0 * _uniform(2 * pairs, k0, k1).log()).sqrt()
    angle = (2.0 * math.pi) * _uniform(2 * pairs + 1, k0, k1)
    normal = torch.stack([radius * angle.cos(), radius * angle.sin()], dim=2)
    return normal.reshape(len(seeds), -1)[:, :numel].reshape(len(seeds), *shape)


def per_item_crop_flip(
    key: Sequence[int], indices: Tensor, *, hflip: bool, crop_padding: int
) -> CropFlip:
    """Flip flags and crop offsets for `ddae.batching.apply_crop_flip`: item i's from (key, i).

    The distribution of torchvision's RandomHorizontalFlip() (p = ½) + RandomCrop(size, padding)
    used by the official linear.py: flip = bit 0 of the item's 63-bit hash h, top and left offsets
    uniform in 0..2·padding from bits 8+ and 32+ of h (modulo bias < 2⁻²⁰). Returned on the CPU.
    """
    seeds = item_seeds(key, indices)
    flips = (seeds & np.uint64(1)).astype(bool) if hflip else np.zeros(len(seeds), dtype=bool)
    span = np.uint64(2 * crop_padding + 1)
    top = ((seeds >> np.uint64(8)) & np.uint64(0xFFFFFF)) % span
    left = ((seeds >> np.uint64(32)) & np.uint64(0xFFFFFF)) % span
    offsets = np.stack([top, left], axis=1).astype(np.int64)
    return CropFlip(torch.from_numpy(flips), torch.from_numpy(offsets))


def image_inputs(
    images_uint8: Tensor, *, hflip: bool, crop_padding: int, key: Sequence[int] | None
) -> InputsFor:
    """``inputs_for`` of a uint8 image split: per-item flip + pad-crop of view k (or none).

    ``key`` (seed, split) seeds the augmentation of item i in view k from (seed, split, k, AUG, i);
    None means no augmentation (the test split).
    """

    def inputs_for(view: int, indices: Tensor) -> Tensor:
        images = images_uint8[indices.to(images_uint8.device)]
        if key is not None and (hflip or crop_padding):
            params = per_item_crop_flip(
                (*key, view, AUGMENT_STREAM), indices, hflip=hflip, crop_padding=crop_padding
            )
            device = images.device
            params = CropFlip(params.flips.to(device), params.offsets.to(device))
            images = apply_crop_flip(images, params, crop_padding)
        return to_model_range(images)

    return inputs_for
