"""Wide residual network (Zagoruyko & Komodakis 2016), the supervised baseline of DDAE's
Table 8 (WideResNet-28-10 trained from scratch on CIFAR-10 / Tiny-ImageNet).

CIFAR-style WRN-depth-k: a 3×3 stem convolution to 16 channels, three groups of
(depth − 4) / 6 pre-activation basic blocks (BN-ReLU-conv3×3, BN-ReLU-dropout-conv3×3) with
16k, 32k and 64k channels (the 2nd and 3rd group start with stride 2), then BN-ReLU, global
average pooling and a linear classifier. Convolutions have no bias. When a block changes the
width, its 1×1 shortcut projection takes the pre-activated input, as in the reference
implementations. WRN-28-10 with 10 classes has 36,479,194 parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ddae.networks.protocol import ConfiguredNetwork
from ddae.settings.networks import WideResNetConfig


class PreActBasicBlock(nn.Module):
    """BN-ReLU-conv3×3(stride) → BN-ReLU-dropout-conv3×3, plus the (projected) input."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut = None
        if in_channels != out_channels or stride != 1:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = F.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(activated)
        out = self.conv1(activated)  # (B, C_out, H/stride, W/stride)
        out = F.relu(self.bn2(out))
        out = self.conv2(F.dropout(out, p=self.dropout, training=self.training))
        return out + residual


class WideResNet(ConfiguredNetwork):
    """WRN-depth-widen_factor classifier: images (B, C, H, W) -> logits (B, num_classes)."""

    Config = WideResNetConfig  # its config keys (torch-free, validated while planning)

    def __init__(self, config: WideResNetConfig | None = None) -> None:
        super().__init__(config)
        config = self.config
        blocks_per_group = (config.depth - 4) // 6
        widths = [16 * config.widen_factor, 32 * config.widen_factor, 64 * config.widen_factor]
        self.stem = nn.Conv2d(config.in_channels, 16, 3, padding=1, bias=False)
        groups = []
        channels = 16
        for group, width in enumerate(widths):
            blocks = []
            for index in range(blocks_per_group):
                stride = 2 if group > 0 and index == 0 else 1
                blocks.append(PreActBasicBlock(channels, width, stride, config.dropout))
                channels = width
            groups.append(nn.Sequential(*blocks))
        self.groups = nn.Sequential(*groups)
        self.final_bn = nn.BatchNorm2d(channels)
        self.classifier = nn.Linear(channels, config.num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.stem(x))  # (B, 64k, H/4, W/4)
        x = F.relu(self.final_bn(x)).mean(dim=(2, 3))  # (B, 64k)
        return self.classifier(x)  # (B, num_classes)
