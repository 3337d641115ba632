"""Feature-extraction throughput (images/s) of `ddae.features` on the current device.

What it measures, per network and precision, on synthetic uint8 images:

* ``extract``: the whole `ddae.features.iter_features` loop used by `cache_features` — per-image
  seeded flip + pad-4 crop and noise (drawn on the CPU), x = x0 + σ·ε, the framework's network
  inputs, one forward pass with hooks pooling every decoder block, features concatenated;
* ``forward``: the hooked forward pass alone (same inputs every batch), i.e. the ceiling without
  the per-image random draws.

Networks: ``--paper`` uses the paper's CIFAR-10 networks at 32 px from config.yaml
(``pretraining.cifar10_ddpm``: DDPM UNet 35.7M under DDPM; ``pretraining.cifar10_edm``: DDPM++
55.7M under EDM); the default is a tiny DDPM UNet at 16 px (the smoke test's). Modes: fp32, and
on CUDA the fast path that feature caching uses by default (`ddae.fast_path`: bf16 autocast,
TF32, channels_last). t is 11/1000 (DDPM) or 4/18 (EDM), the paper's Table 9 choices.

    python benchmarks/feature_throughput.py                       # tiny net, CPU
    python benchmarks/feature_throughput.py --paper --batch-size 512   # a GPU

Measurements, not tests: nothing is asserted.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml

from ddae.diffusion import build_framework
from ddae.fast_path import FLOAT32, FastPath
from ddae.features import DecoderFeatures, iter_features
from ddae.networks import build_network, count_parameters
from ddae.per_item import TRAIN, image_inputs

CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"
SMOKE_CONFIG = Path(__file__).resolve().parents[1] / "tests" / "smoke" / "config.yaml"
TIMESTEP = {"ddpm": (11, 1000), "edm": (4, 18)}  # Table 9: DDPM 11/1000, EDM 4/18


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(run: dict, device: torch.device, fast: FastPath, batch: int, batches: int) -> dict:
    torch.manual_seed(0)
    net = build_network(run["network"]).to(device).eval().requires_grad_(False)
    framework = build_framework(run["framework"])
    t, steps = TIMESTEP[run["framework"]["kind"]]
    if run["framework"]["kind"] == "ddpm":
        steps = run["framework"].get("timesteps", 1000)
    sigma = framework.sigma_at_timestep(t, steps)
    resolution = run["network"]["resolution"]
    count = batch * (batches + 1)
    images = torch.randint(0, 256, (count, 3, resolution, resolution), dtype=torch.uint8)
    inputs = image_inputs(images.to(device), hflip=True, crop_padding=4, key=(0, TRAIN))

    def extract(indices: torch.Tensor) -> None:
        for _ in iter_features(
            framework,
            net,
            inputs,
            sigma,
            indices,
            noise_key=(0, TRAIN, 0, 1),
            view=0,
            batch_size=batch,
            device=device,
            fast=fast,
        ):
            pass

    extract(torch.arange(batch))  # warm-up
    synchronize(device)
    start = time.perf_counter()
    extract(torch.arange(batch, count))
    synchronize(device)
    extract_rate = batch * batches / (time.perf_counter() - start)

    x = torch.randn(batch, 3, resolution, resolution, device=device)
    sigmas = torch.full((batch,), sigma, dtype=torch.float64, device=device)
    net_input, labels = framework.network_inputs(x, sigmas)
    net_input = fast.activations(net_input)
    with (
        torch.no_grad(),
        DecoderFeatures(fast.prepare(net), stop_early=False) as features,
        fast.running(device.type),
    ):
        features(net_input, labels)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(batches):
            features(net_input, labels)
        synchronize(device)
    forward_rate = batch * batches / (time.perf_counter() - start)
    return {
        "parameters": count_parameters(net),
        "extract": extract_rate,
        "forward": forward_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--paper", action="store_true", help="the paper's 32 px networks")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--batch-size", type=int, default=None, help="default 256 GPU / 32 CPU")
    parser.add_argument("--batches", type=int, default=None, help="timed batches (def. 10 / 3)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    batch = args.batch_size or (256 if device.type == "cuda" else 32)
    batches = args.batches or (10 if device.type == "cuda" else 3)
    if args.paper:
        runs = yaml.safe_load(args.config.read_text())["pretraining"]
        networks = {name: runs[name] for name in ("cifar10_ddpm", "cifar10_edm")}
    else:
        networks = {
            "tiny_ddpm_unet_16px": yaml.safe_load(SMOKE_CONFIG.read_text())["pretraining"][
                "digits_ddpm"
            ]
        }
    modes = {"fp32": FLOAT32}
    if device.type == "cuda":
        modes["fast"] = FastPath.for_device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {name}, batch {batch}, {batches} timed batches, torch {torch.__version__}")
    print(f"{'network':<22} {'params':>8} {'mode':>9} {'extract img/s':>14} {'fwd img/s':>10}")
    for label, run in networks.items():
        for mode, fast in modes.items():
            row = measure(run, device, fast, batch, batches)
            print(
                f"{label:<22} {row['parameters'] / 1e6:>7.1f}M {mode:>9} "
                f"{row['extract']:>14.1f} {row['forward']:>10.1f}"
            )


if __name__ == "__main__":
    main()
