"""The DDPM UNet of Ho et al. (2020), as used in DDAE (paper Appendix A, Table 5).

The network is diffusers' `UNet2DModel` configured exactly like the published
``google/ddpm-cifar10-32`` checkpoint (Ho et al.'s CIFAR-10 EMA weights): channels
128·(1, 2, 2, 2), two residual blocks per level, self-attention (one head) at 16×16 only,
GroupNorm with 32 groups and eps 1e-6, sinusoidal timestep embedding without the sin/cos flip
and with frequency shift 1, and the original asymmetric downsampling padding. It has
35,746,307 parameters at 32 px and at 64 px (attention moves to another 256-channel level).

`decoder_blocks()` gives the paper's "layer k/12" numbering (Table 9): the 12 up-path blocks,
lowest resolution first. At a level with attention a block's output is taken after the
attention that follows its residual block. `truncated(k)` cuts the network after block k
(paper Sec. 3.2 and 4.1: fine-tuning "truncates DDAE at the best representation layer").
"""

from __future__ import annotations

import torch
from torch import nn

from ddae.networks.protocol import ConfiguredNetwork, check_layer, no_augment_labels
from ddae.settings.networks import DDPMUNetConfig


class DDPMUNet(ConfiguredNetwork):
    """Ho et al.'s UNet: ``(x, noise_labels) -> ε̂`` with noise_labels the 0-based DDPM step."""

    Config = DDPMUNetConfig  # its config keys (torch-free, validated while planning)

    def __init__(self, config: DDPMUNetConfig | None = None) -> None:
        super().__init__(config)
        config = self.config
        level_resolutions = [
            config.resolution >> level for level in range(len(config.channel_mult))
        ]
        has_attention = [res in config.attn_resolutions for res in level_resolutions]
        # imported here: diffusers pulls in torch._dynamo (seconds per job) for every job that
        # imports ddae.networks, most of which never build a DDPM UNet
        from diffusers import UNet2DModel

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
        """Predict the noise ε in ``x`` (B, C, H, W) at DDPM steps ``noise_labels`` (B,); the
        `TruncatedDDPMUNet` runs this too, on its truncated ``unet``."""
        no_augment_labels(augment_labels, "DDPMUNet")
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

    def truncated(self, layer: int) -> TruncatedDDPMUNet:
        """The encoder from the input to the output of decoder block ``layer`` (1-based).

        It shares this network's modules (no copy); every later decoder block and the output
        layers are left out, so its parameters are exactly the ones the cut network uses.
        """
        return TruncatedDDPMUNet(self, layer)


class _PartialUpBlock(nn.Module):
    """The first ``count`` (resnet, attention) pairs of a diffusers up block, no upsampler."""

    def __init__(self, up_block: nn.Module, count: int) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(list(up_block.resnets)[:count])
        attentions = getattr(up_block, "attentions", None)
        self.attentions = nn.ModuleList(list(attentions)[:count]) if attentions else None

    def forward(
        self, hidden_states: torch.Tensor, skips: tuple[torch.Tensor, ...], temb: torch.Tensor
    ) -> torch.Tensor:
        # the same steps as diffusers' (Attn)UpBlock2D.forward, stopped after `count` blocks
        for index, resnet in enumerate(self.resnets):
            hidden_states = torch.cat([hidden_states, skips[-1]], dim=1)
            skips = skips[:-1]
            hidden_states = resnet(hidden_states, temb)
            if self.attentions is not None:
                hidden_states = self.attentions[index](hidden_states)
        return hidden_states


class _TruncatedUNet2D(nn.Module):
    """diffusers' ``UNet2DModel`` up to decoder block ``within`` (0-based) of up level ``level``,
    called like it: ``(sample, timestep, return_dict=False) -> (block output,)``.

    Its submodules are the full model's under the same names (``down_blocks.0...``); the last up
    block is a `_PartialUpBlock`. The forward repeats ``UNet2DModel.forward`` step by step.
    """

    def __init__(self, unet: nn.Module, blocks_per_level: int, level: int, within: int) -> None:
        super().__init__()
        self.blocks_per_level = blocks_per_level
        self.time_proj = unet.time_proj
        self.time_embedding = unet.time_embedding
        self.conv_in = unet.conv_in
        self.down_blocks = unet.down_blocks
        self.mid_block = unet.mid_block
        self.up_blocks = nn.ModuleList(list(unet.up_blocks)[:level])
        self.up_blocks.append(_PartialUpBlock(unet.up_blocks[level], within + 1))

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, return_dict: bool = False
    ) -> tuple[torch.Tensor]:
        if return_dict:
            raise ValueError("the truncated UNet returns a tuple (return_dict=False)")
        timesteps = timestep
        if timesteps.dim() == 0:
            timesteps = timesteps[None].to(sample.device)
        ones = torch.ones(sample.shape[0], dtype=timesteps.dtype, device=timesteps.device)
        timesteps = timesteps * ones
        dtype = self.conv_in.weight.dtype
        emb = self.time_embedding(self.time_proj(timesteps).to(dtype=dtype))
        sample = self.conv_in(sample)
        skips: tuple[torch.Tensor, ...] = (sample,)
        for down_block in self.down_blocks:
            sample, res_samples = down_block(hidden_states=sample, temb=emb)
            skips += res_samples
        sample = self.mid_block(sample, emb)
        for up_block in self.up_blocks:
            res_samples = skips[-self.blocks_per_level :]
            skips = skips[: -self.blocks_per_level]
            sample = up_block(sample, res_samples, emb)  # the last one is a _PartialUpBlock
        return (sample,)  # (B, C, r, r)


class TruncatedDDPMUNet(nn.Module):
    """`DDPMUNet` up to decoder block ``layer``: ``(x, noise_labels) -> (B, C, r, r)``.

    Module names equal the full network's (``unet.down_blocks.0...``), so its state dict is
    the full one restricted to the used modules. Its ``unet`` is a `_TruncatedUNet2D`, which
    repeats diffusers' ``UNet2DModel.forward`` step by step, hence the output equals (bitwise)
    what a forward hook on ``decoder_blocks()[layer - 1]`` of the full network sees.
    """

    forward = DDPMUNet.forward  # on the truncated ``unet``

    def __init__(self, network: DDPMUNet, layer: int) -> None:
        super().__init__()
        self.layer = check_layer(layer, network.num_decoder_blocks)
        self.layer_name = network.decoder_blocks()[layer - 1][0]
        blocks_per_level = network.config.num_blocks + 1
        level, within = divmod(layer - 1, blocks_per_level)
        self.unet = _TruncatedUNet2D(network.unet, blocks_per_level, level, within)
        # of the output (B, C, r, r)
        self.out_channels = int(self.unet.up_blocks[-1].resnets[-1].out_channels)
