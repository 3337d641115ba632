"""DiT-XL/2 transfer on the current device: feature extraction and fine-tuning throughput.

The paper's latent-space DiT rows (Tables 3, 4, 9) run DiT-XL/2-256 (675M parameters) on
4×32×32 Stable-Diffusion latents. This script builds the network from its config (random
weights: throughput does not depend on them, and no download is needed) and measures, per
precision (fp32; bf16 autocast on CUDA):

* ``features``: one forward pass with hooks pooling all 28 blocks (`ddae.features`), the work of
  `ddae.features.cache_features` per latent;
* ``finetune``: a training step of the encoder truncated after block 12 (Table 9's 12/28) with
  mean pooling, a linear head and Adam (`ddae.finetune`'s model), images/s and peak memory;
* the largest difference between the truncated encoder's pooled output and the hooked feature of
  the same block (the two paths must agree).

    python benchmarks/dit_transfer.py                 # the paper's DiT-XL/2 (use a GPU)
    python benchmarks/dit_transfer.py --tiny          # a small DiT, for a CPU

Measurements, not tests: nothing is asserted.
"""

from __future__ import annotations

import argparse

import torch
from pretrain_throughput import time_calls
from torch import nn

from ddae.diffusion import build_framework
from ddae.features import DecoderFeatures
from ddae.networks import build_network, count_parameters

XL2 = {"arch": "dit"}  # DiT-XL/2 defaults: 28 blocks, hidden 1152, patch 2, 32x32 latents
TINY = {"arch": "dit", "input_size": 8, "hidden_size": 64, "depth": 4, "num_heads": 2}
T, STEPS = 121, 1000  # Table 9: DiT CIFAR-10 t = 121/1000


def timed(function, device: torch.device, repeats: int) -> float:
    """Seconds per call after two untimed warm-up calls."""
    return time_calls(function, device, 2, repeats) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layer", type=int, default=12, help="Table 9: 12/28 (CIFAR-10)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.tiny:
        args.layer = min(args.layer, TINY["depth"])
    device = torch.device(args.device)
    torch.manual_seed(0)
    spec = TINY if args.tiny else XL2
    net = build_network(spec).to(device).eval().requires_grad_(False)
    framework = build_framework({"kind": "ddpm", "timesteps": 1000})
    size = net.config.input_size
    print(f"DiT {spec}: {count_parameters(net):,} parameters, device {device}")

    x0 = torch.randn(args.batch_size, net.config.in_channels, size, size, device=device)
    sigma = torch.full((args.batch_size,), framework.sigma_at_timestep(T, STEPS), device=device)
    x = x0 + sigma.reshape(-1, 1, 1, 1) * torch.randn_like(x0)
    inputs, labels = framework.network_inputs(x, sigma)
    precisions = [False, True] if device.type == "cuda" else [False]
    for bf16 in precisions:
        with DecoderFeatures(net) as features:

            def extract(bf16: bool = bf16) -> list[torch.Tensor]:
                with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                    return features(inputs, labels)

            seconds = timed(extract, device, args.repeats)
        name = "bf16" if bf16 else "fp32"
        blocks = len(net.decoder_blocks())
        print(
            f"features {name}: {args.batch_size / seconds:,.0f} latents/s ({blocks} blocks pooled)"
        )

    with DecoderFeatures(net, [args.layer]) as features:
        hooked = features(inputs, labels)[0]
    encoder = net.truncated(args.layer)
    pooled = encoder(inputs, labels).float().mean(dim=(2, 3))
    difference = float((pooled - hooked).abs().max())
    print(f"truncated vs hooked block {args.layer}: max |diff| {difference:.3g}")

    head = nn.Linear(encoder.out_channels, 10).to(device)
    encoder.requires_grad_(True).train()
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=8e-5)
    targets = torch.randint(0, 10, (args.batch_size,), device=device)
    clean, _ = framework.network_inputs(x0, sigma)  # fine-tuning: clean latents at a fixed t
    for bf16 in precisions:

        def step(bf16: bool = bf16) -> None:
            with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                logits = head(encoder(clean, labels).float().mean(dim=(2, 3)))
            loss = nn.functional.cross_entropy(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seconds = timed(step, device, args.repeats)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
        name = "bf16" if bf16 else "fp32"
        rate = args.batch_size / seconds
        print(
            f"finetune {name} (blocks 1..{args.layer}): {rate:,.0f} latents/s, peak {peak:.1f} GiB"
        )


if __name__ == "__main__":
    main()
