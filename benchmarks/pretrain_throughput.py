"""Diffusion pre-training throughput (images/s) of the paper's two CIFAR-10 networks.

What it measures: full `ddae.training.Trainer.step` calls (batch assembly and augmentation on the
device, forward, loss, backward, gradient clipping, Adam, EMA update) for

* ``ddpm``:   the DDPM UNet (35.7M, paper Table 5) with the DDPM framework, run
  ``pretraining.cifar10_ddpm`` of ``config.yaml``;
* ``ddpmpp``: DDPM++ (55.7M) with the EDM framework and EDM augmentation (p = 0.12), run
  ``pretraining.cifar10_edm``;

each in up to three modes that override only the speed flags of the run's training config:

* ``fp32-eager``:   bf16=False, channels_last=False, compile=False;
* ``fast``:         bf16=True,  channels_last=True,  compile=False;
* ``fast+compile``: bf16=True,  channels_last=True,  compile=True (CUDA only).

The Trainer applies bf16 autocast, channels_last and torch.compile only on CUDA, and on CUDA it
always uses fused Adam, so the fp32-eager baseline there is "fp32 + fused Adam" (and no TF32,
which the package never enables). On CPU ``fast`` therefore runs the same code as ``fp32-eager``
and ``fast+compile`` is skipped.

The data are random uint8 images at 32 px (four global batches), so nothing is downloaded. Every
configuration builds a fresh Trainer, runs ``--warmup`` untimed steps (these include
torch.compile's compilation), then times ``--steps`` steps; on CUDA the clock is read after
``torch.cuda.synchronize``. images/s = steps × batch / elapsed. Peak memory is
``torch.cuda.max_memory_allocated`` (reset before each configuration) on CUDA; on CPU it is the
process's max resident set size from ``resource.getrusage``, which only ever grows, so later rows
include earlier ones.

Run it from the repository root::

    python benchmarks/pretrain_throughput.py                      # CPU: batch 8, 3 + 5 steps
    python benchmarks/pretrain_throughput.py --batch-size 128     # a GPU: 10 + 50 steps
    python benchmarks/pretrain_throughput.py --networks ddpmpp --modes fast fast+compile \\
        --json throughput.json

The batch is one process's batch (the paper's runs split 512 or 256 over 4 GPUs, i.e. 128 or 64
per GPU). No number printed here is asserted anywhere; it is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from ddae.batching import epoch_permutation
from ddae.datasets.format import ImageDataset
from ddae.distributed import World
from ddae.networks import count_parameters
from ddae.training import Trainer

CONFIG = Path(__file__).resolve().parents[1] / "config.yaml"
RUNS = {"ddpm": "cifar10_ddpm", "ddpmpp": "cifar10_edm"}  # network name -> paper run
MODES = {
    "fp32-eager": {"bf16": False, "channels_last": False, "compile": False},
    "fast": {"bf16": True, "channels_last": True, "compile": False},
    "fast+compile": {"bf16": True, "channels_last": True, "compile": True},
}


def paper_run(config: dict[str, Any], run_name: str, batch: int, mode: str) -> dict[str, Any]:
    """The run's network/framework/training from config.yaml with batch and speed flags set."""
    run = config["pretraining"][run_name]
    training = {**run.get("training", {}), "batch_size": batch, **MODES[mode]}
    return {"network": run["network"], "framework": run["framework"], "training": training}


def synthetic_dataset(count: int, resolution: int, seed: int = 0) -> ImageDataset:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 3, resolution, resolution), generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    return ImageDataset(images.to(torch.uint8), labels, [str(c) for c in range(10)])


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    function: Callable[[], Any], device: torch.device, warmup: int, repeats: int
) -> float:
    """Seconds for `repeats` calls of `function` after `warmup` untimed ones, up to the device
    finishing them."""
    for _ in range(warmup):
        function()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    synchronize(device)
    return time.perf_counter() - start


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    scale = 2**20 if platform.system() == "Darwin" else 2**10
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def run_steps(trainer: Trainer, permutation: torch.Tensor, count: int) -> float:
    """Seconds taken by `count` optimizer steps, up to the device finishing them."""
    start = time.perf_counter()
    for _ in range(count):
        # Trainer.step reads the batch at state.epoch_step; wrap around as run_to does per epoch.
        if trainer.state.epoch_step == trainer.steps_per_epoch:
            trainer.state.epoch_step = 0
        trainer.step(permutation)
    synchronize(trainer.device)
    return time.perf_counter() - start


def measure(run: dict[str, Any], device: torch.device, warmup: int, steps: int) -> dict[str, Any]:
    """Build a Trainer for `run`, warm it up, and time `steps` optimizer steps."""
    batch = run["training"]["batch_size"]
    dataset = synthetic_dataset(4 * batch, run["network"]["resolution"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = Trainer(run, dataset, World(rank=0, size=1, device=device))
    permutation = epoch_permutation(len(dataset), trainer.config.seed, 0)

    warmup_s = run_steps(trainer, permutation, warmup)
    elapsed = run_steps(trainer, permutation, steps)
    result = {
        "params": count_parameters(trainer.state.network),
        "images_per_s": steps * batch / elapsed,
        "step_ms": 1000 * elapsed / steps,
        "warmup_s": warmup_s,
        "peak_memory_mib": peak_memory_mib(device),
    }
    del trainer, permutation, dataset
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def print_table(rows: list[dict[str, Any]], memory_label: str) -> None:
    header = ["network", "params", "mode", "batch", "images/s", "step ms", "warmup s", memory_label]
    lines = []
    for r in rows:
        if "error" in r:
            cells = [r["network"], "", r["mode"], str(r["batch"]), r["error"], "", "", ""]
        else:
            cells = [
                r["network"],
                f"{r['params'] / 1e6:.1f}M",
                r["mode"],
                str(r["batch"]),
                f"{r['images_per_s']:.1f}",
                f"{r['step_ms']:.1f}",
                f"{r['warmup_s']:.1f}",
                f"{r['peak_memory_mib']:.0f} MiB",
            ]
        lines.append(cells)
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    left = {0, 2}  # text columns; numbers are right-aligned

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(fmt(header))
    print("  ".join("-" * w for w in widths))
    for cells in lines:
        print(fmt(cells))


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--networks", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--batch-size", type=int, help="default 128 on CUDA, 8 on CPU")
    parser.add_argument("--warmup", type=int, help="untimed steps; default 10 CUDA, 3 CPU")
    parser.add_argument("--steps", type=int, help="timed steps; default 50 CUDA, 5 CPU")
    parser.add_argument("--config", type=Path, default=CONFIG, help="the paper's config.yaml")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    if on_cuda:
        torch.cuda.set_device(device)
    batch = args.batch_size or (128 if on_cuda else 8)
    warmup = args.warmup if args.warmup is not None else (10 if on_cuda else 3)
    steps = args.steps or (50 if on_cuda else 5)
    config = yaml.safe_load(args.config.read_text())

    cpu_name = platform.processor() or platform.machine()
    name = torch.cuda.get_device_name(device) if on_cuda else cpu_name
    print(f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"batch {batch}, {warmup} warm-up + {steps} timed steps per configuration\n")

    notes = []
    if on_cuda:
        notes.append("CUDA: the Trainer always uses fused Adam, also in fp32-eager; TF32 is off.")
        memory_label = "peak alloc"
        notes.append("peak alloc = torch.cuda.max_memory_allocated, reset per configuration.")
    else:
        notes.append("CPU: the Trainer ignores bf16/channels_last, so fast == fp32-eager here.")
        memory_label = "max RSS"
        notes.append("max RSS = process ru_maxrss (never reset: a row includes earlier rows).")

    rows = []
    for network in args.networks:
        for mode in args.modes:
            if MODES[mode]["compile"] and not on_cuda:
                notes.append(f"{network} {mode}: skipped, the Trainer compiles only on CUDA.")
                continue
            run = paper_run(config, RUNS[network], batch, mode)
            row: dict[str, Any] = {"network": network, "run": RUNS[network], "mode": mode}
            row["batch"] = batch
            print(f"  {network} {mode} ...", flush=True)
            try:
                row.update(measure(run, device, warmup, steps))
            except torch.OutOfMemoryError:
                row["error"] = "out of memory"
                gc.collect()
                torch.cuda.empty_cache()
            rows.append(row)

    print()
    print_table(rows, memory_label)
    print()
    for note in notes:
        print(f"note: {note}")

    if args.json:
        report = {
            "device": str(device),
            "device_name": name,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "batch_size": batch,
            "warmup_steps": warmup,
            "timed_steps": steps,
            "memory": memory_label,
            "results": rows,
            "notes": notes,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
