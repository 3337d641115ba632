"""EDM's non-leaking geometric augmentation pipeline, driven by an explicit `torch.Generator`.

EDM (Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models",
NeurIPS 2022, Sec. 5 "augmentation regularization") trains its CIFAR-10 DDPM++ network on
augmented images and gives the network the augmentation parameters as a 9-dim conditioning
vector (``augment_dim=9``); sampling feeds zeros, so the augmentations do not leak into the
generated images. The transforms and their resampling come from ADA (Karras et al., "Training
Generative Adversarial Networks with Limited Data", NeurIPS 2020). The paper reproduced here
uses EDM's CIFAR-10 checkpoint trained this way (DDAE Sec. 4.1.2; official DDAE code
``model/EDM.py`` builds the same pipeline with ``augment_prob: 0.12``).

Reimplemented from NVlabs/edm ``training/augment.py`` (``AugmentPipe``) and ``train.py``
(``--augment=0.12`` → p 0.12, xflip 1e8, yflip 1, scale 1, rotate_frac 1, aniso 1,
translate_frac 1). Differences, all deliberate:

- randomness comes from the caller's generator instead of torch's global RNG; the draws are made
  in EDM's order and number, so a generator seeded like EDM's global RNG reproduces EDM's choices;
- the label vector always has EDM's 9 columns; a transform whose multiplier is 0 keeps zeros in
  its columns (EDM drops them), so the network's ``augment_dim`` stays 9;
- with p = 0 the images are returned unchanged (EDM still resamples them through an identity
  transform, which reproduces them to float rounding).

With xflip = 1e8 the x-flip is decided by a fair coin for every image whatever p is (1e8·p ≥ 1),
so it acts as a dataset x-flip that the network is told about.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

AUGMENT_DIM = 9
LABEL_NAMES = (
    "xflip",
    "yflip",
    "scale",
    "rotate_cos_minus_1",
    "rotate_sin",
    "aniso_cos",
    "aniso_sin",
    "translate_x",
    "translate_y",
)

# Low-pass filter of the Symlet-6 wavelet ("sym6" in EDM's augment.py, the filter EDM/ADA use
# for the 2× up- and downsampling around the bilinear resampling). Taps sum to √2.
SYM6 = (
    0.015404109327027373,
    0.0034907120842174702,
    -0.11799011114819057,
    -0.048311742585633,
    0.4910559419267466,
    0.787641141030194,
    0.3379294217276218,
    -0.07263752278646252,
    -0.021060292512300564,
    0.04472490177066578,
    0.0017677118642428036,
    -0.007800708325034148,
)


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities (multipliers of p) and strengths, with EDM's CIFAR-10 settings as defaults."""

    p: float = 0.12  # overall augmentation probability (train.py --augment)
    xflip: float = 1e8  # multiplier for x-flip
    yflip: float = 1.0  # multiplier for y-flip
    scale: float = 1.0  # multiplier for isotropic scaling
    rotate_frac: float = 1.0  # multiplier for arbitrary rotation
    aniso: float = 1.0  # multiplier for anisotropic scaling
    translate_frac: float = 1.0  # multiplier for fractional translation
    scale_std: float = 0.2  # log2 std of isotropic scaling
    rotate_frac_max: float = 1.0  # rotation range, 1 = full circle
    aniso_std: float = 0.2  # log2 std of anisotropic scaling
    aniso_rotate_prob: float = 0.5  # probability of anisotropic scaling in a rotated frame
    translate_frac_std: float = 0.125  # translation std relative to image size

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {self.p}")
        if not 0.0 <= self.aniso_rotate_prob <= 1.0:
            raise ValueError(f"aniso_rotate_prob must lie in [0, 1], got {self.aniso_rotate_prob}")
        for name in (
            "xflip",
            "yflip",
            "scale",
            "rotate_frac",
            "aniso",
            "translate_frac",
            "scale_std",
            "rotate_frac_max",
            "aniso_std",
            "translate_frac_std",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")

    @property
    def geometric(self) -> bool:
        """Whether any transform needing resampling is enabled."""
        return self.p > 0 and max(self.scale, self.rotate_frac, self.aniso, self.translate_frac) > 0


# ---------------------------------------------------------------------------------------------
# Batched 3×3 homogeneous matrices of 2-D transforms (column vectors [x, y, 1]).
# ---------------------------------------------------------------------------------------------


_CONSTANTS: dict[tuple, torch.Tensor] = {}


def _constant(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A constant tensor on `device`, copied there once and kept for later calls.

    Building it with ``torch.tensor(..., device=cuda)`` on every call was a blocking
    host-to-device copy, i.e. a host synchronisation inside the training step.
    """
    key = (values, dtype, torch.device(device))
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(values, dtype=dtype, device=device)
    return _CONSTANTS[key]


def _entry(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """`value` as a tensor of like's dtype and device; a number is filled on the device."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype=like.dtype, device=like.device)
    return torch.full((), value, dtype=like.dtype, device=like.device)  # no host-to-device copy


def _matrices(rows: list[list[torch.Tensor | float]], like: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) from a 3×3 nested list whose entries are (N,) tensors or numbers."""
    entries = [_entry(e, like) for row in rows for e in row]
    return torch.stack(torch.broadcast_tensors(*entries), dim=-1).reshape(*like.shape, 3, 3)


def translation(tx: torch.Tensor, ty: torch.Tensor | float) -> torch.Tensor:
    return _matrices([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx)


def scaling(sx: torch.Tensor, sy: torch.Tensor | float) -> torch.Tensor:
    return _matrices([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx)


def rotation(theta: torch.Tensor) -> torch.Tensor:
    """Rotation by θ: [[cos θ, −sin θ], [sin θ, cos θ]] (clockwise on screen, as y points down)."""
    cos, sin = torch.cos(theta), torch.sin(theta)
    return _matrices([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], theta)


# EDM composes the INVERSE transform G⁻¹ (output pixel → input pixel) as a product of inverses.
def inverse_translation(tx: torch.Tensor, ty: torch.Tensor | float) -> torch.Tensor:
    return translation(-tx, -ty)


def inverse_scaling(sx: torch.Tensor, sy: torch.Tensor | float) -> torch.Tensor:
    return scaling(1 / sx, 1 / sy)


def inverse_rotation(theta: torch.Tensor) -> torch.Tensor:
    return rotation(-theta)


# ---------------------------------------------------------------------------------------------
# Geometric resampling (ADA / EDM): reflect-pad, 2× sym6 upsampling, bilinear grid_sample,
# 2× sym6 downsampling. Coordinates are pixels relative to the image centre.
# ---------------------------------------------------------------------------------------------


def _reflect_margins(g_inv: torch.Tensor, height: int, width: int) -> list[int]:
    """Padding [left, top, right, bottom] covering where the corners of every output map to.

    The margins set the padded image's shape, so they are read on the host (EDM does the same):
    the one host read of the augmentation. The trainer prepares batches on a side CUDA stream,
    so this read waits for the batch's own few kernels, not for the previous training step.
    """
    cx, cy = (width - 1) / 2, (height - 1) / 2
    corners = ((-cx, -cy, 1), (cx, -cy, 1), (cx, cy, 1), (-cx, cy, 1))
    corners = _constant(corners, torch.float32, g_inv.device)
    mapped = (g_inv @ corners.t())[:, :2, :].permute(1, 0, 2).flatten(1)  # (xy, N·4)
    margin = torch.cat([-mapped, mapped]).max(dim=1).values  # [x0, y0, x1, y1]
    filter_pad = len(SYM6) // 4
    margin = margin + _constant(
        (2 * filter_pad - cx, 2 * filter_pad - cy) * 2, torch.float32, g_inv.device
    )
    upper = _constant((width - 1, height - 1) * 2, margin.dtype, g_inv.device)
    margin = margin.clamp(min=torch.zeros_like(upper), max=upper)
    return [int(m) for m in margin.ceil().to(torch.int32).tolist()]


def _filter_weight(images: torch.Tensor, along_width: bool, reverse: bool = False) -> torch.Tensor:
    """Depthwise (C, 1, 1, K) or (C, 1, K, 1) weight of the sym6 taps, for `images`' dtype."""
    taps = _constant(SYM6[::-1] if reverse else SYM6, images.dtype, images.device)
    shape = (1, len(SYM6)) if along_width else (len(SYM6), 1)
    return taps.reshape(1, 1, *shape).repeat(images.shape[1], 1, 1, 1)


def _insert_zeros(images: torch.Tensor, dim: int) -> torch.Tensor:
    """x0, 0, x1, 0, …, x_{L-1} along `dim` (length 2L − 1)."""
    shape = list(images.shape)
    shape[dim] = 2 * shape[dim] - 1
    stuffed = images.new_zeros(shape)
    every_other = [slice(None)] * images.dim()
    every_other[dim] = slice(None, None, 2)
    stuffed[tuple(every_other)] = images
    return stuffed


def _upsample2x(images: torch.Tensor) -> torch.Tensor:
    """2× separable upsampling: zero insertion, then correlation with the reversed sym6 taps.

    Along each axis, output j = Σᵢ x[i]·h[j + 5 − 2i] (length 2L), i.e. a transposed
    convolution; it is computed as EDM does (zero-stuffed signal, 6 pixels of zero padding),
    which keeps results bitwise equal to EDM's.
    """
    channels = images.shape[1]
    pad = (len(SYM6) + 1) // 2
    images = F.conv2d(
        _insert_zeros(images, 3),
        _filter_weight(images, along_width=True, reverse=True),
        padding=(0, pad),
        groups=channels,
    )
    return F.conv2d(
        _insert_zeros(images, 2),
        _filter_weight(images, along_width=False, reverse=True),
        padding=(pad, 0),
        groups=channels,
    )


def _downsample2x(images: torch.Tensor, crop: int) -> torch.Tensor:
    """2× separable downsampling with the sym6 low-pass, cropping `crop` pixels per side."""
    channels = images.shape[1]
    pad = (len(SYM6) - 1) // 2
    images = F.conv2d(
        images,
        _filter_weight(images, along_width=True),
        stride=(1, 2),
        padding=(0, pad),
        groups=channels,
    )[:, :, :, crop:-crop]
    return F.conv2d(
        images,
        _filter_weight(images, along_width=False),
        stride=(2, 1),
        padding=(pad, 0),
        groups=channels,
    )[:, :, crop:-crop, :]


def apply_geometric(images: torch.Tensor, g_inv: torch.Tensor) -> torch.Tensor:
    """Resample each image so that output pixel x shows input pixel G⁻¹x (about the centre).

    `g_inv`: (N, 3, 3) inverse transforms in pixel units. Steps as in EDM: reflect padding wide
    enough for every mapped corner, 2× upsampling, ``affine_grid`` + bilinear ``grid_sample``
    (align_corners False, zeros outside), 2× downsampling back to (H, W).
    """
    n, c, h, w = images.shape
    filter_pad = len(SYM6) // 4
    left, top, right, bottom = _reflect_margins(g_inv, h, w)
    images = F.pad(images, [left, right, top, bottom], mode="reflect")
    one = torch.ones((), device=images.device)  # float32, like EDM's matrices
    # The padded image's centre moved; shift so that G⁻¹ still acts about the original centre.
    g_inv = translation((left - right) / 2 * one, (top - bottom) / 2 * one) @ g_inv

    images = _upsample2x(images)
    two, half = 2 * one, 0.5 * one
    g_inv = scaling(two, two) @ g_inv @ inverse_scaling(two, two)
    g_inv = translation(-half, -half) @ g_inv @ inverse_translation(-half, -half)

    # affine_grid works in [-1, 1] coordinates of the input (upsampled) and output images.
    out_h, out_w = (h + 2 * filter_pad) * 2, (w + 2 * filter_pad) * 2
    to_unit_input = scaling(2 / images.shape[3] * one, 2 / images.shape[2] * one)
    from_unit_output = scaling(out_w / 2 * one, out_h / 2 * one)  # inverse of scaling(2/out)
    g_inv = to_unit_input @ g_inv @ from_unit_output
    theta = g_inv[:, :2, :].to(images.dtype)
    grid = F.affine_grid(theta, [n, c, out_h, out_w], align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return _downsample2x(images, filter_pad)


# ---------------------------------------------------------------------------------------------
# The pipeline.
# ---------------------------------------------------------------------------------------------


class AugmentPipe:
    """EDM's augmentation: ``(images, generator) → (augmented images, (N, 9) labels)``.

    Images are float (N, C, H, W) in [-1, 1] on the generator's device. Label columns, in EDM's
    order: x-flip, y-flip (0/1); isotropic scale w (s = 2^(w·scale_std)); rotation cos θ − 1,
    sin θ; anisotropic w·cos r, w·sin r; translation tx, ty (in units of translate_frac_std ×
    size). A transform not applied to an image leaves zeros in its columns.
    """

    def __init__(self, config: AugmentConfig | None = None) -> None:
        self.config = config if config is not None else AugmentConfig()

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = images.shape[0]
        labels = torch.zeros(n, AUGMENT_DIM, dtype=torch.float32, device=images.device)
        if self.config.p == 0:
            return images, labels
        draw = _Draws(n, generator, images.device)
        images = self._flips(images, draw, labels)
        if self.config.geometric:
            g_inv = self._inverse_transform(draw, labels, images.shape[2], images.shape[3])
            images = apply_geometric(images, g_inv)
        return images, labels

    def _chosen(self, draw: _Draws, multiplier: float, shape: tuple[int, ...] = ()) -> torch.Tensor:
        """Per-image Bernoulli(multiplier · p) decisions (EDM: ``rand < multiplier * p``)."""
        return draw.uniform(*shape) < multiplier * self.config.p

    def _flips(self, images: torch.Tensor, draw: _Draws, labels: torch.Tensor) -> torch.Tensor:
        for column, multiplier, dim in ((0, self.config.xflip, 3), (1, self.config.yflip, 2)):
            if multiplier > 0:
                flip = draw.coin() & self._chosen(draw, multiplier)
                images = torch.where(flip[:, None, None, None], images.flip(dim), images)
                labels[:, column] = flip.float()
        return images

    def _inverse_transform(
        self, draw: _Draws, labels: torch.Tensor, height: int, width: int
    ) -> torch.Tensor:
        """G⁻¹ = S⁻¹ · R⁻¹ · A⁻¹ · T⁻¹, drawing each factor in EDM's order (identity if off)."""
        cfg = self.config
        g_inv = torch.eye(3, device=labels.device).expand(labels.shape[0], 3, 3)
        if cfg.scale > 0:
            w = draw.normal()
            w = torch.where(self._chosen(draw, cfg.scale), w, 0.0)
            s = torch.exp2(w * cfg.scale_std)
            g_inv = g_inv @ inverse_scaling(s, s)
            labels[:, 2] = w
        if cfg.rotate_frac > 0:
            theta = (draw.uniform() * 2 - 1) * (math.pi * cfg.rotate_frac_max)
            theta = torch.where(self._chosen(draw, cfg.rotate_frac), theta, 0.0)
            g_inv = g_inv @ inverse_rotation(-theta)
            labels[:, 3], labels[:, 4] = torch.cos(theta) - 1, torch.sin(theta)
        if cfg.aniso > 0:
            w, r = draw.normal(), (draw.uniform() * 2 - 1) * math.pi
            w = torch.where(self._chosen(draw, cfg.aniso), w, 0.0)
            r = torch.where(draw.uniform() < cfg.aniso_rotate_prob, r, 0.0)
            s = torch.exp2(w * cfg.aniso_std)
            g_inv = g_inv @ inverse_rotation(r) @ inverse_scaling(s, 1 / s) @ inverse_rotation(-r)
            labels[:, 5], labels[:, 6] = w * torch.cos(r), w * torch.sin(r)
        if cfg.translate_frac > 0:
            t = draw.normal(2)
            t = torch.where(self._chosen(draw, cfg.translate_frac, (1,)), t, 0.0)
            tx, ty = (
                t[0] * (width * cfg.translate_frac_std),
                t[1] * (height * cfg.translate_frac_std),
            )
            g_inv = g_inv @ inverse_translation(tx, ty)
            labels[:, 7], labels[:, 8] = t[0], t[1]
        return g_inv


class _Draws:
    """Random draws for a batch of `n` images from one generator, on `device`."""

    def __init__(self, n: int, generator: torch.Generator, device: torch.device) -> None:
        self.n, self.generator, self.device = n, generator, device

    def uniform(self, *leading: int) -> torch.Tensor:
        return torch.rand(*leading, self.n, generator=self.generator, device=self.device)

    def normal(self, *leading: int) -> torch.Tensor:
        return torch.randn(*leading, self.n, generator=self.generator, device=self.device)

    def coin(self) -> torch.Tensor:
        size = (self.n,)
        return torch.randint(2, size, generator=self.generator, device=self.device) == 1
