"""Noise-conditional WideResNet: the supervised baseline of DDAE's Figure 6 (paper Sec. 4.1.3).

"Following [53] (Song et al. 2021, score SDE, Appendix I.1), we train noise-conditional
WideResNets on CIFAR-10 as supervised baselines." The architecture follows Song et al.'s
``models/wideresnet_noise_conditional.py`` and its PyTorch port in the official DDAE code
(FutureXiang/ddae ``model/wideresnet_noise_song.py``, ``wide_28_10_song``); this is our own
implementation of that description:

* per-image standardisation of the input, (x − mean) / max(std, 1/√N) over the C·H·W values
  (TensorFlow's ``per_image_standardization``; population std as in Song's JAX code — the DDAE
  port uses the unbiased std, a 1/√N-relative difference);
* the noise condition c (VP: t/T; VE: ln σ, see `ddae.noise_conditional`) through a fixed
  Gaussian Fourier projection (``fourier_size`` frequencies w ~ N(0, ``fourier_scale``²), features
  [sin 2πwc, cos 2πwc]) and an MLP Linear → SiLU → Linear to ``embedding_dim`` channels
  (128 → 256 → 512 → 512 in the paper's model);
* a 3×3 stem to 16 channels, three groups of (depth − 4)/6 pre-activation blocks with 16k, 32k,
  64k channels (groups 2 and 3 start with stride 2). A block is GN-ReLU → conv3×3 (+ SiLU →
  Linear of the embedding, added per channel) → GN-ReLU → conv3×3, plus a parameter-free
  shortcut: average pooling by the stride and zero channel padding when the width changes. The
  very first block activates before branching (its shortcut carries the activated input).
  GroupNorm uses min(C/4, 32) groups; convolutions have no bias;
* GN-ReLU, global average pooling and a linear classifier.

Weights of convolutions and linear layers are He-normal (fan-in), as in the DDAE port.
WRN-28-10 with 10 classes has 38,913,114 trainable parameters (the Fourier frequencies are a
fixed buffer): 2,692,480 in the embedding (MLP 394,240 + per-block projections 2,298,240) and
36,220,634 in the rest. This equals the count of the DDAE port's ``wide_28_10_song`` (its own
``test`` counts parameters with ``requires_grad``), derived layer by layer from its structure
in ``tests/test_noise_conditional.py``. (A BatchNorm WRN-28-10 with projection shortcuts has
36,479,194.)

Official-code fact: the DDAE port computes the time embedding but calls its groups without it
(``self.group1(x)``), so its "noise-conditional" WRN never sees the condition (hence its
``find_unused_parameters=True``). ``condition=False`` reproduces that effective model (no
embedding at all); the default ``condition=True`` is the network Song et al. and the paper
describe.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddae.networks.protocol import ConfiguredNetwork
from ddae.settings.networks import NoisyWideResNetConfig


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(channels // 4, 32), num_channels=channels, eps=1e-5)


class GaussianFourierProjection(nn.Module):
    """c (B,) → [sin 2πwc, cos 2πwc] (B, 2·size) with fixed w ~ N(0, scale²) (Tancik et al.)."""

    def __init__(self, size: int, scale: float) -> None:
        super().__init__()
        self.register_buffer("frequencies", torch.randn(size) * scale)

    def forward(self, condition: Tensor) -> Tensor:
        angles = 2 * math.pi * condition.float()[:, None] * self.frequencies[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)


def _shortcut(x: Tensor, like: Tensor) -> Tensor:
    """Parameter-free residual path: average-pool to ``like``'s size, zero-pad its channels."""
    stride = x.shape[-1] // like.shape[-1]
    if stride > 1:
        x = F.avg_pool2d(x, stride, stride)
    extra = like.shape[1] - x.shape[1]
    if extra > 0:
        x = F.pad(x, (0, 0, 0, 0, 0, extra))
    return x


class NoisyWideBlock(nn.Module):
    """GN-ReLU → conv3×3(stride) (+ embedding) → GN-ReLU → conv3×3, plus the shortcut."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        embedding_dim: int | None,
        activate_before_residual: bool,
    ) -> None:
        super().__init__()
        self.activate_before_residual = activate_before_residual
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.embedding = None
        if embedding_dim is not None:
            self.embedding = nn.Sequential(nn.SiLU(), nn.Linear(embedding_dim, out_channels))
        self.norm2 = _group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)

    def forward(self, x: Tensor, embedding: Tensor | None) -> Tensor:
        activated = F.relu(self.norm1(x))
        residual = activated if self.activate_before_residual else x
        h = self.conv1(activated)  # (B, C_out, H/stride, W/stride)
        if self.embedding is not None and embedding is not None:
            h = h + self.embedding(embedding)[:, :, None, None].to(h.dtype)
        h = self.conv2(F.relu(self.norm2(h)))
        return h + _shortcut(residual, h)


class NoisyWideResNet(ConfiguredNetwork):
    """Noise-conditional WRN-depth-k: (images (B, C, H, W), condition (B,)) → logits (B, K)."""

    Config = NoisyWideResNetConfig  # its config keys (torch-free, validated while planning)

    def __init__(self, config: NoisyWideResNetConfig | None = None) -> None:
        super().__init__(config)
        config = self.config
        embedding_dim = config.embedding_dim if config.condition else None
        self.fourier = None
        self.embedding_mlp = None
        if config.condition:
            self.fourier = GaussianFourierProjection(config.fourier_size, config.fourier_scale)
            self.embedding_mlp = nn.Sequential(
                nn.Linear(2 * config.fourier_size, config.embedding_dim),
                nn.SiLU(),
                nn.Linear(config.embedding_dim, config.embedding_dim),
            )
        self.stem = nn.Conv2d(config.in_channels, 16, 3, padding=1, bias=False)
        blocks_per_group = (config.depth - 4) // 6
        widths = [16 * config.widen_factor, 32 * config.widen_factor, 64 * config.widen_factor]
        blocks = []
        channels = 16
        for group, width in enumerate(widths):
            for index in range(blocks_per_group):
                stride = 2 if group > 0 and index == 0 else 1
                first = group == 0 and index == 0
                blocks.append(NoisyWideBlock(channels, width, stride, embedding_dim, first))
                channels = width
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = _group_norm(channels)
        self.classifier = nn.Linear(channels, config.num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: Tensor, condition: Tensor) -> Tensor:
        count = x[0].numel()
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
        x = (x - mean) / std.clamp(min=1.0 / math.sqrt(count))  # per-image standardisation
        embedding = None
        if self.fourier is not None and self.embedding_mlp is not None:
            condition = condition.reshape(-1).expand(x.shape[0])
            embedding = self.embedding_mlp(self.fourier(condition))  # (B, embedding_dim)
        h = self.stem(x)
        for block in self.blocks:
            h = block(h, embedding)  # (B, 64k, H/4, W/4) after the last group
        h = F.relu(self.final_norm(h)).mean(dim=(2, 3))  # (B, 64k)
        return self.classifier(h)  # (B, num_classes)
