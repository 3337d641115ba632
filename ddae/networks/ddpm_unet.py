"""The DDPM UNet of Ho et al. (2020), as used in DDAE (paper Appendix A, Table 5).

The network is diffusers' `UNet2DModel` configured exactly like the published
``google/ddpm-cifar10-32`` checkpoint (Ho et al.'s CIFAR-10 EMA weights): channels
128·(1, 2, 2, 2), two residual blocks per level, self-attention (one head) at 16×16 only,
GroupNorm with 32 groups and eps 1e-6, sinusoidal timestep embedding without the sin/cos flip
and with frequency shift 1, and the original asymmetric downsampling padding. It has
35,746,307 parameters at 32 px and at 64 px (attention moves to another 256-channel level).

`decoder_blocks()` gives the paper's "layer k/12" numbering (Table 9): the 12 up-path blocks,
lowest resolution first. At a level with attention a block's output is taken after the
attention that follows its residual block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import UNet2DModel
from torch import nn


class DDPMUNet(nn.Module):
    """Ho et al.'s UNet: ``(x, noise_labels) -> ε̂`` with noise_labels the 0-based DDPM step."""

    @dataclass(frozen=True)
    class Config:
        resolution: int = 32
        in_channels: int = 3
        base_channels: int = 128
        channel_mult: tuple[int, ...] = (1, 2, 2, 2)
        num_blocks: int = 2
        attn_resolutions: tuple[int, ...] = (16,)
        dropout: float = 0.1

        def __post_init__(self) -> None:
            if self.resolution % 2 ** (len(self.channel_mult) - 1):
                raise ValueError(
                    f"resolution {self.resolution} is not divisible by "
                    f"2^{len(self.channel_mult) - 1} (one halving per channel_mult level)"
                )
            if self.base_channels % 32:
                raise ValueError(f"base_channels {self.base_channels} is not a multiple of 32")

    def __init__(self, config: Config | None = None) -> None:
        super().__init__()
        config = config if config is not None else self.Config()
        self.config = config
        level_resolutions = [
            config.resolution >> level for level in range(len(config.channel_mult))
        ]
        has_attention = [res in config.attn_resolutions for res in level_resolutions]
        self.unet = UNet2DModel(
            sample_size=config.resolution,
            in_channels=config.in_channels,
            out_channels=config.in_channels,
            block_out_channels=tuple(config.base_channels * m for m in config.channel_mult),
            layers_per_block=config.num_blocks,
            down_block_types=tuple(
                "AttnDownBlock2D" if attn else "DownBlock2D" for attn in has_attention
            ),
            up_block_types=tuple(
                "AttnUpBlock2D" if attn else "UpBlock2D" for attn in reversed(has_attention)
            ),
            attention_head_dim=None,  # one head over all channels, as in Ho et al.
            norm_num_groups=32,
            norm_eps=1e-6,
            act_fn="silu",
            time_embedding_type="positional",
            flip_sin_to_cos=False,
            freq_shift=1,
            downsample_padding=0,
            mid_block_scale_factor=1,
            resnet_time_scale_shift="default",
            dropout=config.dropout,
        )

    def forward(
        self,
        x: torch.Tensor,
        noise_labels: torch.Tensor,
        augment_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the noise ε in ``x`` (B, C, H, W) at DDPM steps ``noise_labels`` (B,)."""
        if augment_labels is not None:
            raise ValueError("DDPMUNet has no augmentation input; augment_labels must be None")
        return self.unet(x, noise_labels, return_dict=False)[0]  # (B, C, H, W)

    def decoder_blocks(self) -> list[tuple[str, nn.Module]]:
        """The decoder blocks in forward order, lowest resolution first (paper Table 9).

        Each name is the module's path in this network (``self.get_submodule(name)``), e.g.
        ``unet.up_blocks.2.attentions.0`` for "7/12" at 32 px. A forward hook on the module
        receives the block's output feature map (B, C, H, W).
        """
        blocks = []
        for index, up_block in enumerate(self.unet.up_blocks):
            kind = "attentions" if getattr(up_block, "attentions", None) else "resnets"
            for j, module in enumerate(getattr(up_block, kind)):
                blocks.append((f"unet.up_blocks.{index}.{kind}.{j}", module))
        return blocks

    @property
    def num_decoder_blocks(self) -> int:
        return len(self.unet.up_blocks) * (self.config.num_blocks + 1)
