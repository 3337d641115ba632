"""One prepared GPU session (issues 13 and 24): the fast path's gaps and the throughput figures.

benchmarks/gpu_validation.sh runs it after the CUDA test set (`pytest -m cuda`), which asserts
what this script used to print for issue 13: host syncs per `Trainer.step` (DDPM none, EDM with
augmentation one), the side stream's batch bitwise the main stream's and the bf16 training loss
within 2 % of float32 (tests/test_training.py), and the fast path's tolerances on tiny networks.
This script measures, on the paper's networks, in order of priority; each stage prints its
figures, the JSON report is rewritten after each (a timeout keeps what ran), and a stage that
would start after ``--budget-s`` seconds is skipped with a line saying so:

1. ``sampling``: `ddae.sampling.generate` with the fast path (bf16, TF32, channels_last) against
   float32 on the same seeds (Heun, 18 levels, the paper's CIFAR-10 DDPM++, weights perturbed):
   max and mean |difference| on [−1, 1], and images/s of each;
2. ``features``: `ddae.features.iter_features` (all decoder layers, 1,024 images) on the fast
   path (`ddae.fast_path`: bf16, TF32, channels_last) against float32, for both CIFAR-10
   networks (weights perturbed): per layer max |difference| relative to the layer's largest
   |feature| (tests/test_fast_path.py bounds it by 2 %), and images/s of each;
3. ``paper-cost``: `paper_cost.py measure` (training and inference images/s of every network
   config.yaml's DAG runs, about 2 min); ``paper_cost.py table --rates <out>/rates.json`` then
   turns them into GPU-hours per stage anywhere (the table needs Snakemake, not a GPU);
4. ``throughput``: `pretrain_throughput.py` (fp32-eager, fast, fast+compile; batch 128) for both
   CIFAR-10 networks: whether torch.compile pays, i.e. whether ``training.compile`` should
   default on for CUDA;
5. ``side-by-side``: `pretrain_side_by_side.py` against the authors' checkouts, CIFAR-10 cases
   first, then the 64 px Tiny-ImageNet cases.

Run on the device machine from the repository root (benchmarks/README.md says how the authors'
checkouts get there)::

    python3 benchmarks/gpu_session.py --ddae-repo benchmarks/authors/ddae \\
        --edm-repo benchmarks/authors/edm --out "$OUT"
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ddae.networks import build_network  # noqa: E402
from ddae.sampling import generate  # noqa: E402

CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())
DEVICE = torch.device("cuda")


def perturbed_network(spec: dict[str, Any]) -> torch.nn.Module:
    """The network of `spec` at initialisation plus 0.05·N(0, 1) on every weight: DDPM++ (as
    EDM) initialises its residual branches and output layer at 1e-5 scale, which would leave
    the fast path nothing to change and the gaps below near zero."""
    torch.manual_seed(0)
    net = build_network(spec).to(DEVICE).eval().requires_grad_(False)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return net


def stage_sampling() -> dict[str, Any]:
    run = CONFIG["pretraining"]["cifar10_edm"]
    net = perturbed_network(run["network"])
    from ddae.diffusion import build_framework

    framework = build_framework(run["framework"])
    seeds = range(256)
    out = {}
    for name, flags in (("fp32", False), ("fast", True)):
        fp = {"bf16": flags, "tf32": flags, "channels_last": flags}
        kwargs = {"sampler": "heun", "steps": 18, "device": DEVICE, **fp}
        generate(framework, net, (3, 32, 32), range(8), **kwargs)  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        out[name] = generate(framework, net, (3, 32, 32), seeds, **kwargs)
        torch.cuda.synchronize()
        out[name + "_images_per_s"] = len(seeds) / (time.perf_counter() - start)
        net = net.to(memory_format=torch.contiguous_format)
    difference = (out["fast"] - out["fp32"]).abs()
    result = {
        "max_abs": difference.max().item(),
        "mean_abs": difference.mean().item(),
        "fp32_images_per_s": out["fp32_images_per_s"],
        "fast_images_per_s": out["fast_images_per_s"],
    }
    print(f"  heun 18, 256 samples: |fast - fp32| max {result['max_abs']:.4f} mean "
          f"{result['mean_abs']:.5f}; {result['fp32_images_per_s']:.0f} img/s fp32, "
          f"{result['fast_images_per_s']:.0f} img/s fast")  # fmt: skip
    return result


def all_layer_features(
    framework: Any, net: torch.nn.Module, images: torch.Tensor, sigma: float, fast: Any
) -> list[torch.Tensor]:
    """Pooled features of every decoder layer, (N, D_k) each, as `cache_features` makes them."""
    from ddae.features import iter_features

    batches = iter_features(
        framework, net, lambda view, index: images[index.to(images.device)], sigma,
        torch.arange(len(images)), noise_key=(0, 0, 0, 0), view=0, batch_size=256,
        device=images.device, fast=fast,
    )  # fmt: skip
    return [torch.cat(layer) for layer in zip(*(pooled for _, pooled in batches), strict=True)]


def stage_features() -> dict[str, Any]:
    from ddae.diffusion import build_framework
    from ddae.fast_path import FLOAT32, FastPath

    result = {}
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(1024, 3, 32, 32, generator=generator) * 2 - 1).to(DEVICE)
    for case in ("cifar10_ddpm", "cifar10_edm"):
        run = CONFIG["pretraining"][case]
        net = perturbed_network(run["network"])
        framework = build_framework(run["framework"])
        sigma = framework.sigma_at_timestep(11, run["evaluation"]["steps"])
        out = {}
        for name, fast in (("fp32", FLOAT32), ("fast", FastPath.for_device(DEVICE))):
            net = net.to(memory_format=torch.contiguous_format)
            all_layer_features(framework, net, images, sigma, fast)  # warm-up
            torch.cuda.synchronize()
            start = time.perf_counter()
            out[name] = all_layer_features(framework, net, images, sigma, fast)
            torch.cuda.synchronize()
            out[name + "_images_per_s"] = len(images) / (time.perf_counter() - start)
        relative = [
            ((fast - fp32).abs().max() / fp32.abs().max()).item()
            for fast, fp32 in zip(out["fast"], out["fp32"], strict=True)
        ]
        result[case] = {
            "max_relative_per_layer": relative,
            "fp32_images_per_s": out["fp32_images_per_s"],
            "fast_images_per_s": out["fast_images_per_s"],
        }
        print(f"  {case}: {len(relative)} layers, max relative |fast - fp32| "
              f"{max(relative):.4f} (< 0.02: {max(relative) < 0.02}); "
              f"{out['fp32_images_per_s']:.0f} img/s fp32, "
              f"{out['fast_images_per_s']:.0f} img/s fast")  # fmt: skip
        del net
    return result


def run_script(arguments: list[str], json_path: Path, timeout: float) -> dict[str, Any]:
    command = [sys.executable, *arguments, "--json", str(json_path)]
    print("  $ " + " ".join(command), flush=True)
    try:
        subprocess.run(command, check=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {timeout:.0f} s"}
    except subprocess.CalledProcessError as error:
        return {"error": f"exit status {error.returncode}"}
    return json.loads(json_path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ddae-repo", type=Path, help="checkout of FutureXiang/ddae")
    parser.add_argument("--edm-repo", type=Path, help="checkout of NVlabs/edm")
    parser.add_argument("--out", type=Path, default=Path("gpu_session_out"))
    parser.add_argument("--budget-s", type=float, default=540.0, help="start no stage after")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("no CUDA device: this script checks the CUDA fast paths")
    args.out.mkdir(parents=True, exist_ok=True)
    begin = time.monotonic()
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__}")
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}

    def left() -> float:
        return args.budget_s - (time.monotonic() - begin)

    stages = [
        ("sampling", stage_sampling),
        ("features", stage_features),
        ("paper-cost", lambda: run_script(
            ["benchmarks/paper_cost.py", "measure"], args.out / "rates.json",
            max(left() - 5, 1))),
        ("throughput", lambda: run_script(
            ["benchmarks/pretrain_throughput.py", "--batch-size", "128", "--warmup", "5",
             "--steps", "20"], args.out / "throughput.json", max(left() - 5, 1))),
    ]  # fmt: skip
    if args.ddae_repo is not None:
        for cases in (["cifar10_ddpm", "cifar10_edm"], ["tiny_imagenet_ddpm", "tiny_imagenet_edm"]):
            command = ["benchmarks/pretrain_side_by_side.py", "--ddae-repo", str(args.ddae_repo),
                       "--cases", *cases, "--warmup", "5", "--steps", "20"]  # fmt: skip
            if args.edm_repo is not None:
                command += ["--edm-repo", str(args.edm_repo)]
            path = args.out / f"side_by_side_{cases[0].split('_')[0]}.json"
            stages.append((f"side-by-side {cases[0].split('_')[0]}", lambda c=command, p=path: (
                run_script(c, p, max(left() - 5, 1)))))  # fmt: skip
    for name, stage in stages:
        if left() <= 0:
            print(f"\n[{name}] skipped: the {args.budget_s:.0f} s budget is spent")
            report[name] = {"skipped": "time budget"}
            continue
        print(f"\n[{name}] at {time.monotonic() - begin:.0f} s", flush=True)
        try:
            report[name] = stage()
        except Exception as error:  # report and go on: one broken stage must not hide the rest
            report[name] = {"error": f"{type(error).__name__}: {error}"}
            print(f"  FAILED: {type(error).__name__}: {error}")
        torch.cuda.empty_cache()
        (args.out / "gpu_session.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out / 'gpu_session.json'} after {time.monotonic() - begin:.0f} s")


if __name__ == "__main__":
    main()
