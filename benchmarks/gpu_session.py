"""One prepared GPU session for issue 13: fast-path correctness, then throughput, in < 10 min.

Stages, in order of priority; each prints its figures, and a stage that would start after
``--budget-s`` seconds is skipped with a line saying so (so the command ends inside the device
call's limit and whatever ran is printed):

1. ``syncs``: host synchronisations inside `Trainer.step` on CUDA, counted with
   ``torch.cuda.set_sync_debug_mode("warn")`` over timed steps after a warm-up, for the DDPM
   run (expected 0) and the EDM run with augmentation (expected 1 per step: the padding margins'
   ``.tolist()``, which waits for the batch side stream only);
2. ``side-stream``: the batch drawn on the side stream equals, bitwise, the batch drawn on the
   main stream from the same generator state;
3. ``bf16-loss``: the training loss of one batch under the fast path (bf16 autocast +
   channels_last) against float32, same weights and batch: relative difference < 2 %;
4. ``sampling``: `ddae.sampling.generate` with the fast path (bf16, TF32, channels_last) against
   float32 on the same seeds (Heun, 18 levels, the paper's CIFAR-10 DDPM++ at initialisation):
   max and mean |difference| on [−1, 1], and images/s of each;
5. ``features``: `ddae.features.iter_features` (all decoder layers, 1,024 images) on the fast
   path (`ddae.fast_path`: bf16, TF32, channels_last) against float32, for both CIFAR-10
   networks at initialisation: per layer max |difference| relative to the layer's largest
   |feature| (tests/test_fast_path.py bounds it by 2 % on CPU), and images/s of each;
6. ``paper-cost``: `paper_cost.py measure` (training and inference images/s of every network
   config.yaml's DAG runs, about 2 min); ``paper_cost.py table --rates <out>/rates.json`` then
   turns them into GPU-hours per stage anywhere (the table needs Snakemake, not a GPU);
7. ``throughput``: `pretrain_throughput.py` (fp32-eager, fast, fast+compile; batch 128) for both
   CIFAR-10 networks: whether torch.compile pays, i.e. whether ``training.compile`` should
   default on for CUDA;
8. ``side-by-side``: `pretrain_side_by_side.py` against the authors' checkouts, CIFAR-10 cases
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
import warnings
from pathlib import Path
from typing import Any

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from pretrain_throughput import paper_run, synthetic_dataset  # noqa: E402

from ddae.batching import epoch_permutation  # noqa: E402
from ddae.distributed import World  # noqa: E402
from ddae.networks import build_network  # noqa: E402
from ddae.sampling import generate  # noqa: E402
from ddae.training import Trainer  # noqa: E402

CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text())
DEVICE = torch.device("cuda")


def trainer_for(case: str, batch: int, mode: str = "fast") -> tuple[Trainer, torch.Tensor]:
    run = paper_run(CONFIG, case, batch, mode)
    dataset = synthetic_dataset(4 * batch, run["network"]["resolution"])
    trainer = Trainer(run, dataset, World(rank=0, size=1, device=DEVICE))
    return trainer, epoch_permutation(len(dataset), 0, 0)


def steps(trainer: Trainer, permutation: torch.Tensor, count: int) -> None:
    for _ in range(count):
        if trainer.state.epoch_step == trainer.steps_per_epoch:
            trainer.state.epoch_step = 0
        trainer.step(permutation)


def stage_syncs() -> dict[str, Any]:
    result = {}
    for case in ("cifar10_ddpm", "cifar10_edm"):
        trainer, permutation = trainer_for(case, 128)
        steps(trainer, permutation, 3)
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                steps(trainer, permutation, 5)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        messages = sorted({str(w.message).splitlines()[0] for w in caught})
        result[case] = {"syncs_in_5_steps": len(caught), "kinds": messages}
        print(f"  {case}: {len(caught)} host syncs in 5 steps {messages}")
        del trainer
    return result


def stage_side_stream() -> dict[str, Any]:
    trainer, permutation = trainer_for("cifar10_edm", 128)
    state = trainer.state.generator.get_state()
    side = trainer._global_batch(permutation)
    torch.cuda.synchronize()
    trainer.state.generator.set_state(state)
    stream, trainer._batch_stream = trainer._batch_stream, None
    main = trainer._draw_batch(permutation)
    trainer._batch_stream = stream
    equal = all(torch.equal(a, b) for a, b in zip(side, main, strict=True))
    print(f"  side-stream batch == main-stream batch (x0, sigma, noise, labels): {equal}")
    return {"bitwise_equal": equal}


def stage_bf16_loss() -> dict[str, Any]:
    result = {}
    for case in ("cifar10_ddpm", "cifar10_edm"):
        trainer, permutation = trainer_for(case, 128)
        x0, sigma, noise, labels = trainer._global_batch(permutation)
        torch.manual_seed(0)
        model = trainer.state.network.eval()  # no dropout: both passes see the same network
        with torch.no_grad():
            fp32 = trainer.framework.training_loss(model, x0, sigma, noise, labels).mean()
            fast_x0, fast_noise = (
                t.contiguous(memory_format=torch.channels_last) for t in (x0, noise)
            )
            with torch.autocast("cuda", dtype=torch.bfloat16):
                fast = trainer.framework.training_loss(
                    model, fast_x0, sigma, fast_noise, labels
                ).mean()
        relative = abs(fast.item() - fp32.item()) / abs(fp32.item())
        ok = relative < 0.02
        result[case] = {"fp32": fp32.item(), "bf16": fast.item(), "relative": relative, "ok": ok}
        print(f"  {case}: loss fp32 {fp32.item():.5f} bf16 {fast.item():.5f} "
              f"relative {relative:.2e} (< 2e-2: {ok})")  # fmt: skip
        del trainer
    return result


def stage_sampling() -> dict[str, Any]:
    run = CONFIG["pretraining"]["cifar10_edm"]
    torch.manual_seed(0)
    net = build_network(run["network"]).to(DEVICE).eval()
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
        torch.manual_seed(0)
        net = build_network(run["network"]).to(DEVICE).eval().requires_grad_(False)
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
        ("syncs", stage_syncs),
        ("side-stream", stage_side_stream),
        ("bf16-loss", stage_bf16_loss),
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
