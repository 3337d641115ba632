"""Whole-paper GPU-hours from measured throughput, per stage (issue 13, item 5).

Two steps, so that the GPU time goes to measuring only:

* ``measure`` (on the GPU): for every network the config's DAG runs, times its training step
  and its inference forward pass on the current device and writes images/s to a rates JSON:
  diffusion networks through `ddae.training.Trainer.step` at the run's per-GPU batch (the
  pretraining step itself: augmentation, bf16, fused Adam, EMA) and a forward pass on the
  evaluation fast path (`ddae.fast_path`); DiT-XL/2 and the WideResNets through a plain
  bf16 training step (forward, cross-entropy on the output, backward, Adam); SD's VAE encoder
  at 256 px; the FID network as torchvision's Inception-v3 at 299 px (clean-fid's TF-Inception
  has the same layers; its weights are not needed to time it).
* ``table`` (anywhere): walks Snakemake's own dry run of a working directory (every job with its
  rule and wildcards), gives each job its work — images through which network, trained or
  inferred — from the config, divides by the measured rate and prints GPU-hours per stage as
  Markdown, with the totals the issue's targets name.

Work per job (N = training images, M = test images of the job's dataset; read from
``resources/data/<dataset>`` when prepared, else the paper's Sec. 4 sizes):

* ``pretrain`` / ``pretrain_segment``: (epoch − previous listed epoch) · N trained;
* ``sample_fid``: samples · network evaluations of the sampler (Heun: 2·steps − 1; DDIM: its
  levels; DDPM ancestral: T) forward, plus the samples through Inception;
* ``fid_reference``: N through Inception;
* ``probe_timestep``: views · N + M forward (every decoder layer: a full pass);
* ``linear_probe``: epochs · N + M forward (an upper bound: the pass stops at the chosen layer);
* ``align_uniform``: 2 · images forward (two noise draws per image, Eq. 3);
* ``finetune`` / ``scratch``: epochs · N trained (upper bound: the truncated encoder), plus
  epochs · M forward for the per-epoch test;
* ``noisy_classifier``: epochs · N forward (frozen network) + test_levels · M forward;
* ``supervised_wrn`` / ``noisy_wrn``: epochs · N trained (+ test_levels · M for the noisy one);
* ``cache_latents``: views · N + M through the VAE encoder;
* downloads, imports, stand-ins, ``grid_search``, tables and figures: no GPU work.

GPU-hours = images / (images/s of one GPU) / 3600, i.e. perfect scaling over a job's GPUs
(optimistic for multi-GPU jobs) and no process start-up or data-loading time (which the smoke
run's per-job benchmark files show: a few seconds per job).

    python benchmarks/paper_cost.py measure --json rates.json            # on the GPU
    python benchmarks/paper_cost.py table --rates rates.json             # config.yaml's DAG
    python benchmarks/paper_cost.py table --rates rates.json --workdir /tmp/mini   # another

Measurements, not tests: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ddae.paper_shape import ddpm_sampling_level_count  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAPER_SIZES = {"cifar10": (50_000, 10_000), "tiny_imagenet": (100_000, 10_000)}  # Sec. 4
NO_GPU_WORK = re.compile(r"^(download_.*|import_official|prepare_dataset|stand_in_.*|grid_search"
                         r"|table\d|figure\d|layer_choice|findings|pixel_probe|validation"
                         r"|all)$")  # fmt: skip
INCEPTION = "inception"  # the FID network's rate key
VAE = "vae"  # SD VAE encoder's rate key


# --- the DAG and its work ----------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    rule: str
    wildcards: dict[str, str]


@dataclass(frozen=True)
class Work:
    """Images of one job through one network: trained (forward + backward + step) or inferred."""

    network: str  # a rate key: a pretraining run standing for its network, "supervised.<ds>", ...
    mode: str  # "train" or "forward"
    images: float


def dry_run_jobs(workdir: Path, target: str = "all") -> list[Job]:
    """Every job Snakemake would run for `target` in `workdir`, from its dry run's job list."""
    command = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-d",
               str(workdir), "-n", "--forceall", target]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"snakemake dry run failed:\n{result.stderr[-3000:]}")
    return parse_dry_run(result.stdout + result.stderr)


def parse_dry_run(text: str) -> list[Job]:
    """Jobs of a dry run's listing: ``rule NAME:`` (or ``localrule``, or ``checkpoint`` for
    grid_search) blocks and their ``wildcards: a=1, b=2`` lines."""
    jobs: list[Job] = []
    rule = None
    for line in text.splitlines():
        header = re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):$", line.strip())
        if header:
            if rule is not None:
                jobs.append(Job(rule, {}))
            rule = header.group(1)
            continue
        found = re.match(r"^\s+wildcards: (.*)$", line)
        if found and rule is not None:
            pairs = (item.split("=", 1) for item in found.group(1).split(", "))
            jobs.append(Job(rule, {key: value for key, value in pairs}))
            rule = None
    if rule is not None:
        jobs.append(Job(rule, {}))
    return jobs


def network_keys(config: dict[str, Any]) -> dict[str, str]:
    """Each pretraining run → the first run with the same network spec (its rate key)."""
    first: dict[str, str] = {}
    keys = {}
    for name, run in config["pretraining"].items():
        spec = json.dumps(run["network"], sort_keys=True)
        keys[name] = first.setdefault(spec, name)
    return keys


def dataset_sizes(workdir: Path, dataset: str) -> tuple[int, int]:
    """(N, M): the prepared dataset's split sizes, or the paper's when not prepared yet."""
    folder = workdir / "resources" / "data" / dataset
    if (folder / "train.npz").is_file() and (folder / "test.npz").is_file():
        sizes = [len(np.load(folder / f"{split}.npz")["labels"]) for split in ("train", "test")]
        return sizes[0], sizes[1]
    return PAPER_SIZES[dataset]


def sampler_evaluations(run: dict[str, Any], fid: dict[str, Any]) -> int:
    """Network evaluations per sample of the run's FID sampler (`ddae.sampling`)."""
    steps = fid["steps"]
    if fid["sampler"] == "heun":
        return 2 * steps - 1
    timesteps = run["framework"].get("timesteps", 1000)
    if fid["sampler"] == "ddpm_ancestral":
        return timesteps
    return ddpm_sampling_level_count(timesteps, steps)  # DDIM's respaced levels


def chain_start(run: dict[str, Any], epoch: int) -> int:
    """The epoch a pretrain (or pretrain_segment) job ending at `epoch` starts from: the last
    listed epoch or `segment_epochs` end before it (workflow/rules/pretrain_chain.smk)."""
    listed = sorted(int(e) for e in run["epochs"])
    every = run.get("segment_epochs", 0)
    points = set(listed)
    for first, end in zip([0, *listed], listed, strict=False):
        points.update(range(first + every, end, every) if every else [])
    return max((p for p in points if p < epoch), default=0)


class Workload:
    """The work of each job of a config's DAG (module docstring)."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.config, self.workdir = config, workdir
        self.keys = network_keys(config)
        self.rules: dict[str, Callable[[Job], list[Work]]] = {
            "pretrain": self.pretrain,
            "pretrain_segment": self.pretrain,
            "sample_fid": self.sample_fid,
            "fid_reference": self.fid_reference,
            "probe_timestep": self.probe_timestep,
            "linear_probe": self.linear_probe,
            "linear_probe_at_pair": self.linear_probe,  # the validation's (results/validation.md)
            "align_uniform": self.align_uniform,
            "finetune": self.classifier,
            "scratch": self.classifier,
            "noisy_classifier": self.noisy_classifier,
            "supervised_wrn": self.supervised_wrn,
            "noisy_wrn": self.noisy_wrn,
            "cache_latents": self.cache_latents,
        }

    def of(self, job: Job) -> list[Work]:
        if NO_GPU_WORK.match(job.rule):
            return []
        if job.rule not in self.rules:
            raise KeyError(f"rule {job.rule!r}: no work model (benchmarks/paper_cost.py)")
        return self.rules[job.rule](job)

    def _run(self, job: Job) -> tuple[dict[str, Any], str, int, int]:
        """The job's run, its network's rate key and (N, M) of its dataset."""
        run = self.config["pretraining"][job.wildcards["run"]]
        return run, self.keys[job.wildcards["run"]], *dataset_sizes(self.workdir, run["dataset"])

    def _stage(self, job: Job, stage: str) -> dict[str, Any]:
        return self.config["pretraining"][job.wildcards["run"]]["evaluation"][stage]

    def pretrain(self, job: Job) -> list[Work]:
        run, key, n, _ = self._run(job)
        epoch = int(job.wildcards["epoch"])
        return [Work(key, "train", (epoch - chain_start(run, epoch)) * n)]

    def sample_fid(self, job: Job) -> list[Work]:
        run, key, _, _ = self._run(job)
        fid = {"samples": 50_000, **self._stage(job, "fid")}
        samples = fid["samples"]
        return [
            Work(key, "forward", samples * sampler_evaluations(run, fid)),
            Work(INCEPTION, "forward", samples),
        ]

    def fid_reference(self, job: Job) -> list[Work]:
        return [
            Work(INCEPTION, "forward", dataset_sizes(self.workdir, job.wildcards["dataset"])[0])
        ]

    def probe_timestep(self, job: Job) -> list[Work]:
        _, key, n, m = self._run(job)
        views = self._stage(job, "features").get("views", 10)
        return [Work(key, "forward", views * n + m)]

    def linear_probe(self, job: Job) -> list[Work]:
        _, key, n, m = self._run(job)
        epochs = self._stage(job, "linear_probe").get("epochs", 10)
        return [Work(key, "forward", epochs * n + m)]

    def align_uniform(self, job: Job) -> list[Work]:
        _, key, n, _ = self._run(job)
        images = self._stage(job, "align_uniform").get("images", 10_000) or n
        return [Work(key, "forward", 2 * min(images, n))]

    def classifier(self, job: Job) -> list[Work]:
        _, key, n, m = self._run(job)
        epochs = self._stage(job, job.rule)["epochs"]
        return [Work(key, "train", epochs * n), Work(key, "forward", epochs * m)]

    def noisy_classifier(self, job: Job) -> list[Work]:
        _, key, n, m = self._run(job)
        head = self._stage(job, "noisy")
        epochs, levels = head.get("epochs", 10), head.get("test_levels", 20)
        return [Work(key, "forward", epochs * n + levels * m)]

    def supervised_wrn(self, job: Job) -> list[Work]:
        dataset = job.wildcards["dataset"]
        n, _ = dataset_sizes(self.workdir, dataset)
        epochs = self.config["supervised"][dataset]["training"]["epochs"]
        return [Work(f"supervised.{dataset}", "train", epochs * n)]

    def noisy_wrn(self, job: Job) -> list[Work]:
        dataset = job.wildcards["dataset"]
        n, m = dataset_sizes(self.workdir, dataset)
        epochs = self.config["supervised"][dataset]["noisy"]["training"]["epochs"]
        key = f"supervised.{dataset}.noisy"
        return [Work(key, "train", epochs * n), Work(key, "forward", 20 * m)]  # 20 test levels

    def cache_latents(self, job: Job) -> list[Work]:
        _, _, n, m = self._run(job)
        views = self._stage(job, "latents").get("views", 10)
        return [Work(VAE, "forward", views * n + m)]


def job_stage(job: Job) -> str:
    """The table row of a job: its rule, with DiT runs apart (the issue's target excludes DiT
    fine-tuning) and pretraining segments with pretraining."""
    rule = "pretrain" if job.rule == "pretrain_segment" else job.rule
    run = job.wildcards.get("run", "")
    return f"{rule} (DiT)" if run.endswith("_dit") else rule


def cost_table(
    jobs: list[Job], workload: Workload, rates: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    """GPU-hours per stage: {stage: {"jobs", "images", "gpu_hours", "missing"}}."""
    table: dict[str, dict[str, float]] = defaultdict(
        lambda: {"jobs": 0, "images": 0.0, "gpu_hours": 0.0, "missing": 0}
    )
    for job in jobs:
        work = workload.of(job)
        if not work:
            continue
        row = table[job_stage(job)]
        row["jobs"] += 1
        for item in work:
            row["images"] += item.images
            rate = rates.get(item.network, {}).get(item.mode)
            if rate:
                row["gpu_hours"] += item.images / rate / 3600
            else:
                row["missing"] += 1
    return dict(table)


def print_markdown(table: dict[str, dict[str, float]], rates: dict[str, Any]) -> None:
    print(f"GPU-hours on one {rates.get('device', '?')} per GPU (torch {rates.get('torch', '?')};"
          f" rates: {rates.get('command', '?')})\n")  # fmt: skip
    print("| stage | jobs | images (M) | GPU-hours |")
    print("|---|---:|---:|---:|")
    for stage, row in sorted(table.items(), key=lambda item: -item[1]["gpu_hours"]):
        hours = f"{row['gpu_hours']:,.1f}"
        if row["missing"]:
            hours += f" + {row['missing']:.0f} unmeasured"
        print(f"| {stage} | {row['jobs']:.0f} | {row['images'] / 1e6:,.2f} | {hours} |")
    total = sum(row["gpu_hours"] for row in table.values())
    dit_finetune = table.get("finetune (DiT)", {}).get("gpu_hours", 0.0)
    print(f"| **total** | {sum(r['jobs'] for r in table.values()):.0f} | | **{total:,.1f}** |")
    print(f"\nWithout DiT fine-tuning: {total - dit_finetune:,.1f} GPU-hours (issue 13's target:"
          " <= 200).")  # fmt: skip


# --- measuring the rates ------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """A network to time: its rate key, spec, input side, per-GPU training batch and whether
    its training step is the pretraining `Trainer`'s (diffusion runs with a training recipe)."""

    key: str
    network: dict[str, Any]
    side: int
    train_batch: int
    trainer: bool

    def inputs(self, batch: int, device: Any) -> tuple[Any, ...]:
        """A batch of inputs: (x,) for a WideResNet, else (x, noise labels)."""
        import torch

        channels = self.network.get("in_channels", 4 if self.network["arch"] == "dit" else 3)
        x = torch.randn(batch, channels, self.side, self.side, device=device)
        if self.network["arch"] == "wide_resnet":
            return (x,)
        return x, torch.rand(batch, device=device)


def subjects(config: dict[str, Any]) -> Iterator[Subject]:
    """Every network the DAG runs, once (runs sharing a network spec share a rate key)."""
    resolution = {name: spec["resolution"] for name, spec in config["datasets"].items()}
    for name in dict.fromkeys(network_keys(config).values()):
        run = config["pretraining"][name]
        network = run["network"]
        side = network.get("input_size", 32) if network["arch"] == "dit" else network["resolution"]
        if "training" in run:  # pretraining's per-GPU batch
            batch = run["training"]["batch_size"] // max(run["gpus"], 1)
        else:  # not pretrained here (DiT): its fine-tuning's per-GPU batch (Table 7: 8)
            evaluation = run.get("evaluation", {})
            batch = evaluation.get("finetune", {}).get("batch_size", 128)
            batch //= max(evaluation.get("training_gpus", 1), 1)
        yield Subject(name, network, side, max(batch, 1), "training" in run)
    for dataset, spec in config.get("supervised", {}).items():
        entries = {f"supervised.{dataset}": spec, f"supervised.{dataset}.noisy": spec.get("noisy")}
        for key, entry in entries.items():
            if entry:
                batch = entry["training"]["batch_size"] // max(entry["gpus"], 1)
                yield Subject(key, entry["network"], resolution[dataset], max(batch, 1), False)


def measure_forward(
    net: Any, subject: Subject, batch: int, device: Any, warmup: int, repeats: int
) -> float:
    import torch
    from pretrain_throughput import time_calls

    from ddae.fast_path import FastPath

    fast = FastPath.for_device(device)
    inputs = tuple(fast.activations(x) for x in subject.inputs(batch, device))
    fast.prepare(net)

    @torch.no_grad()
    def forward() -> None:
        with fast.running(device.type):
            net(*inputs)

    return batch * repeats / time_calls(forward, device, warmup, repeats)


def measure_plain_training(
    net: Any, subject: Subject, batch: int, device: Any, warmup: int, repeats: int
) -> float:
    """A bf16 (on CUDA) training step: forward, a loss on the output, backward, Adam."""
    import torch
    from pretrain_throughput import time_calls

    inputs = subject.inputs(batch, device)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-6)
    cuda = device.type == "cuda"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            output = net(*inputs)
        output.float().square().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return batch * repeats / time_calls(step, device, warmup, repeats)


def measure_subject(
    subject: Subject,
    config: dict[str, Any],
    device: Any,
    batches: tuple[int, int],
    warmup: int,
    repeats: int,
) -> dict[str, float]:
    """Training and forward images/s of one network at (train batch, forward batch)."""
    import torch
    from pretrain_throughput import measure as measure_trainer
    from pretrain_throughput import paper_run

    from ddae.networks import build_network

    train_batch, forward_batch = batches
    if subject.trainer:
        run = paper_run(config, subject.key, train_batch, "fast")
        train = measure_trainer(run, device, warmup, repeats)["images_per_s"]
    else:
        torch.manual_seed(0)
        net = build_network(subject.network).to(device).train()
        train = measure_plain_training(net, subject, train_batch, device, warmup, repeats)
        del net
    torch.manual_seed(0)
    net = build_network(subject.network).to(device).eval().requires_grad_(False)
    forward = measure_forward(net, subject, forward_batch, device, warmup, repeats)
    return {"train": train, "forward": forward, "train_batch": train_batch,
            "forward_batch": forward_batch}  # fmt: skip


def measure(
    config: dict[str, Any],
    device_name: str,
    quick: bool = False,
    forward_batch: int | None = None,
    repeats: int | None = None,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(rate key, rates) of every network of `config` on `device_name`, one at a time (module
    docstring); a network that fails to build or run gets ``{"error": ...}`` and the rest go on."""
    import torch

    device = torch.device(device_name)
    warmup = 1 if quick else 5
    repeats = repeats or (2 if quick else 20)
    forward_batch = forward_batch or (4 if quick else 256)
    vae_batch = 4 if quick else 64
    timings: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        (subject.key, lambda s=subject: measure_subject(
            s, config, device, (min(s.train_batch, 4) if quick else s.train_batch, forward_batch),
            warmup, repeats))
        for subject in subjects(config)
    ]  # fmt: skip
    timings.append((INCEPTION, lambda: {
        "forward": measure_inception(device, forward_batch, warmup, repeats)}))  # fmt: skip
    timings.append((VAE, lambda: {
        "forward": measure_vae(device, vae_batch, warmup, repeats, quick)}))  # fmt: skip
    for key, timing in timings:
        try:
            rates = timing()
        except Exception as error:  # one network's failure must not lose the others' rates
            rates = {"error": f"{type(error).__name__}: {error}"}
        print(f"{key:<32} {rates}", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        yield key, rates


def measure_inception(device: Any, batch: int, warmup: int, repeats: int) -> float:
    """torchvision's Inception-v3 (random weights) at 299 px: clean-fid's network's layers."""
    import torch
    from pretrain_throughput import time_calls
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, aux_logits=False, init_weights=False).to(device).eval()
    x = torch.rand(batch, 3, 299, 299, device=device)
    with torch.no_grad():
        return batch * repeats / time_calls(lambda: net(x), device, warmup, repeats)


def measure_vae(device: Any, batch: int, warmup: int, repeats: int, quick: bool) -> float:
    """SD's VAE encoder (diffusers AutoencoderKL, sd-vae-ft-* layout) at 256 px, fast path."""
    import torch
    from diffusers import AutoencoderKL
    from pretrain_throughput import time_calls

    from ddae.fast_path import FastPath

    channels = (32, 32, 32, 32) if quick else (128, 256, 512, 512)
    vae = AutoencoderKL(
        block_out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        norm_num_groups=32,
    ).to(device)
    fast = FastPath.for_device(device)
    vae = fast.prepare(vae.eval().requires_grad_(False))
    side = 64 if quick else 256
    x = fast.activations(torch.rand(batch, 3, side, side, device=device) * 2 - 1)

    @torch.no_grad()
    def encode() -> None:
        with fast.running(device.type):
            vae.encode(x)

    return batch * repeats / time_calls(encode, device, warmup, repeats)


# --- command line -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    measuring = commands.add_parser("measure", help="time every network of the DAG here")
    measuring.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    measuring.add_argument("--device", default=None, help="default: cuda if available")
    measuring.add_argument("--quick", action="store_true", help="CPU check: tiny batches")
    measuring.add_argument("--forward-batch", type=int, help="default 256 (--quick: 4)")
    measuring.add_argument("--repeats", type=int, help="timed calls; default 20 (--quick: 2)")
    measuring.add_argument("--json", type=Path, required=True)
    tabling = commands.add_parser("table", help="GPU-hours per stage from a rates JSON")
    tabling.add_argument("--rates", type=Path, required=True)
    tabling.add_argument("--workdir", type=Path, default=ROOT, help="its config.yaml's DAG")
    tabling.add_argument("--target", default="all")
    args = parser.parse_args()
    if args.command == "measure":
        import torch

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        config = yaml.safe_load(args.config.read_text())
        name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
        result = {
            "device": name,
            "torch": torch.__version__,
            "command": "python benchmarks/paper_cost.py " + " ".join(sys.argv[1:]),
            "rates": {},
        }
        for key, rates in measure(config, device, args.quick, args.forward_batch, args.repeats):
            result["rates"][key] = rates  # written after each network: a timeout keeps them
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        return
    rates = json.loads(args.rates.read_text())
    config = yaml.safe_load((args.workdir / "config.yaml").read_text())
    jobs = dry_run_jobs(args.workdir, args.target)
    table = cost_table(jobs, Workload(config, args.workdir), rates["rates"])
    print_markdown(table, rates)


if __name__ == "__main__":
    main()
