"""Pre-training throughput side by side with the authors' code, on one device in one run.

What it times, for each case (a pre-training run of ``config.yaml``), on the same device, with
the same network and the same global batch (one process, so the global batch is the batch):

* ``ours``: `ddae.training.Trainer.step` (batch drawn and augmented on the device, forward,
  loss, backward, clipping, Adam, EMA) in the given modes of ``pretrain_throughput.MODES``
  (default ``fast``, i.e. bf16 autocast + channels_last, and on CUDA ``fast+compile``);
* ``ddae``: the step of FutureXiang/ddae ``train.py`` (``diff(x, use_amp)`` of ``model/DDPM.py``
  or ``model/EDM.py`` around ``model/unet.py``'s UNet, GradScaler, unscale, clip 1.0, Adam,
  ``ema.update()``, ``loss.item()``) with ``--use_amp`` (fp16 autocast + GradScaler) on CUDA;
* ``edm`` (DDPM++ cases only): the step of NVlabs/edm ``training/training_loop.py``
  (``EDMPrecond`` around ``SongUNet``, ``EDMLoss`` with its ``AugmentPipe``, ``nan_to_num`` of
  the gradients, Adam, EMA), with ``--fp16=True`` (``use_fp16``) on CUDA, TF32 off as EDM sets.

The authors' code is imported from user-provided checkouts (``--ddae-repo``, ``--edm-repo``),
never from this repository. Their networks are built from the case's ``network`` section of
``config.yaml`` translated to their arguments, so the parameter counts can be compared in the
table (``params``). What differs from their scripts, on purpose: no data loader (their batches
come from CPU workers; here all three get batches already on the device, which favours theirs),
one process without DDP/SyncBatchNorm (ours is also not wrapped in DDP with one process), and,
if ``ema_pytorch`` is not installed, DDAE's ``ema.update()`` is replaced by the same
per-parameter ``lerp_`` loop (ema_pytorch 0.2's ``update_moving_average``).

Printed per row: images/s, ms per step, FLOPs per step (counted once with
``torch.utils.flop_counter.FlopCounterMode`` on one eager step of that implementation: matrix
products and convolutions, forward and backward), achieved TFLOP/s, MFU against the device's
dense bf16 peak (`PEAK_BF16_TFLOPS`; unknown devices get no MFU) and ours/theirs ratios of
images/s. Nothing here is asserted; it is a measurement.

    python benchmarks/pretrain_side_by_side.py --ddae-repo ../ddae --edm-repo ../edm
    python benchmarks/pretrain_side_by_side.py --ddae-repo ../ddae --cases cifar10_ddpm \\
        --batch-size 4 --warmup 1 --steps 2          # CPU: a few seconds per row
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pretrain_throughput import (  # noqa: E402
    CONFIG,
    MODES,
    paper_run,
    peak_memory_mib,
    synthetic_dataset,
    time_calls,
)

from ddae.batching import epoch_permutation  # noqa: E402
from ddae.distributed import World  # noqa: E402
from ddae.networks import count_parameters  # noqa: E402
from ddae.training import Trainer  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peak in TFLOP/s, from NVIDIA's data sheets: H100/H200
# SXM 989.4 (the data sheets' 1,979 is with 2:4 sparsity), H100 PCIe 756.5, H100 NVL 835.5,
# A100 312. Matched as substrings of torch.cuda.get_device_name, most specific first.
PEAK_BF16_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.4),
    ("H100 PCIe", 756.5),
    ("H100 NVL", 835.5),
    ("H100", 989.4),  # SXM5 ("NVIDIA H100 80GB HBM3")
    ("A100", 312.0),
)

CASES = ("cifar10_ddpm", "cifar10_edm", "tiny_imagenet_ddpm", "tiny_imagenet_edm")
DDAE_FILES = ("model/models.py", "model/DDPM.py", "model/EDM.py", "model/unet.py")
EDM_FILES = ("training/networks.py", "training/loss.py", "training/augment.py", "dnnlib")


class CheckoutError(ValueError):
    """A path given for the authors' code is not a checkout of that repository."""


def peak_tflops(device_name: str) -> float | None:
    """The dense bf16 peak of a CUDA device by name, or None if it is not in the table."""
    for key, peak in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


def mfu(flops_per_step: float, steps_per_s: float, peak: float | None) -> float | None:
    """Model FLOP utilisation: achieved FLOP/s over the peak (None without a peak)."""
    if peak is None:
        return None
    return flops_per_step * steps_per_s / (peak * 1e12)


def count_step_flops(step: Callable[[], Any]) -> int:
    """FLOPs of one call of `step` (forward and backward matmuls/convolutions)."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


def check_checkout(path: Path | None, files: tuple[str, ...], repo: str) -> Path:
    """`path` if it holds `files` of `repo`, else a `CheckoutError` saying what is missing."""
    if path is None:
        raise CheckoutError(f"no checkout of {repo} given")
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise CheckoutError(
            f"{path}: not a directory; clone https://github.com/{repo} and pass its path"
        )
    missing = [f for f in files if not (path / f).exists()]
    if missing:
        raise CheckoutError(
            f"{path}: not a checkout of {repo} ({', '.join(missing)} missing); "
            f"clone https://github.com/{repo} and pass its path"
        )
    return path


def _import_from(root: Path, module: str) -> Any:
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(module)


def _resolutions(network: dict[str, Any]) -> list[int]:
    return [network["resolution"] // 2**i for i in range(len(network["channel_mult"]))]


def ddae_arguments(run: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(model_type, UNet kwargs, diffusion kwargs) of FutureXiang/ddae for our run.

    Their UNet is the DDPM UNet with ``use_res_for_updown=False`` and DDPM++ with True
    (config/DDPM_ddpm.yaml, config/EDM_ddpmpp_aug.yaml); attention where our
    ``attn_resolutions`` has it.
    """
    net, framework = run["network"], run["framework"]
    ddpmpp = net["arch"] == "ddpmpp"
    network = {
        "image_shape": [3, net["resolution"], net["resolution"]],
        "n_channels": net["model_channels"] if ddpmpp else net["base_channels"],
        "ch_mults": list(net["channel_mult"]),
        "is_attn": [r in net["attn_resolutions"] for r in _resolutions(net)],
        "dropout": net["dropout"],
        "n_blocks": net["num_blocks"],
        "use_res_for_updown": ddpmpp,
    }
    if net.get("augment_dim", 0):
        network["augment_dim"] = net["augment_dim"]
    if framework["kind"] == "ddpm":
        diffusion = {
            "n_T": framework.get("timesteps", 1000),
            "betas": [framework.get("beta_min", 1e-4), framework.get("beta_max", 0.02)],
        }
        return "DDPM", network, diffusion
    diffusion = {  # config/EDM_ddpmpp_aug.yaml, with our framework's values where set
        "sigma_data": 0.5, "p_mean": -1.2, "p_std": 1.2, "sigma_min": 0.002, "sigma_max": 80,
        "rho": 7, "S_min": 0.01, "S_max": 1, "S_noise": 1.007,
    }  # fmt: skip
    diffusion.update({k: v for k, v in framework.items() if k in diffusion})
    diffusion["augment_prob"] = run["training"].get("augment_p", 0.0)
    return "EDM", network, diffusion


class _PerParameterEMA:
    """ema_pytorch 0.2's update (lerp_ per parameter, copy per buffer) if it is not installed."""

    def __init__(self, model: torch.nn.Module, beta: float) -> None:
        self.model, self.beta = model, beta
        self.ema_model = copy.deepcopy(model).requires_grad_(False)

    @torch.no_grad()
    def update(self) -> None:
        for ema, current in zip(self.ema_model.parameters(), self.model.parameters(), strict=True):
            ema.lerp_(current, 1.0 - self.beta)
        for ema, current in zip(self.ema_model.buffers(), self.model.buffers(), strict=True):
            ema.copy_(current)


class DdaeStep:
    """One training step of FutureXiang/ddae train.py on device-resident [0, 1] batches."""

    def __init__(self, repo: Path, run: dict[str, Any], batch: int, device: torch.device):
        models = _import_from(repo, "model.models")
        model_type, network, diffusion = ddae_arguments(run)
        diffusion_class, network_class = models.get_models_class(model_type, "UNet")
        torch.manual_seed(0)
        self.diff = diffusion_class(
            nn_model=network_class(**network), **diffusion, device=str(device)
        ).to(device)
        self.diff.train()
        try:
            from ema_pytorch import EMA

            self.ema = EMA(self.diff, beta=run["training"]["ema_decay"], update_after_step=0,
                           update_every=1).to(device)  # fmt: skip
            self.ema_kind = "ema_pytorch"
        except ImportError:
            self.ema = _PerParameterEMA(self.diff, run["training"]["ema_decay"])
            self.ema_kind = "lerp_ loop (ema_pytorch missing)"
        self.amp = device.type == "cuda"
        self.optim = torch.optim.Adam(self.diff.parameters(), lr=1e-4)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        generator = torch.Generator().manual_seed(0)
        shape = (4, batch, *network["image_shape"])
        self.batches = torch.rand(shape, generator=generator).to(device)
        self.calls = 0
        self.params = count_parameters(self.diff.nn_model)
        self.mode = "use_amp (fp16)" if self.amp else "fp32"

    def __call__(self) -> float:
        x = self.batches[self.calls % len(self.batches)]
        self.calls += 1
        self.optim.zero_grad()
        loss = self.diff(x, use_amp=self.amp)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optim)
        torch.nn.utils.clip_grad_norm_(parameters=self.diff.parameters(), max_norm=1.0)
        self.scaler.step(self.optim)
        self.scaler.update()
        self.ema.update()
        return loss.item()  # train.py logs loss.item() every step


class EdmStep:
    """One training step of NVlabs/edm training_loop.py (DDPM++ = SongUNet, EDMPrecond)."""

    def __init__(self, repo: Path, run: dict[str, Any], batch: int, device: torch.device):
        networks = _import_from(repo, "training.networks")
        loss = _import_from(repo, "training.loss")
        augment = _import_from(repo, "training.augment")
        net = run["network"]
        if net["arch"] != "ddpmpp":
            raise ValueError(f"NVlabs/edm's DDPM++ is SongUNet; {net['arch']} is not ddpmpp")
        self.fp16 = device.type == "cuda"
        torch.manual_seed(0)
        self.net = (
            networks.EDMPrecond(
                img_resolution=net["resolution"],
                img_channels=3,
                label_dim=0,
                use_fp16=self.fp16,
                model_type="SongUNet",
                embedding_type="positional",
                encoder_type="standard",
                decoder_type="standard",
                channel_mult_noise=1,
                resample_filter=[1, 1],
                model_channels=net["model_channels"],
                channel_mult=list(net["channel_mult"]),
                num_blocks=net["num_blocks"],
                attn_resolutions=list(net["attn_resolutions"]),
                dropout=net["dropout"],
                augment_dim=net.get("augment_dim", 0),
            )
            .train()
            .requires_grad_(True)
            .to(device)
        )  # fmt: skip  (train.py --arch=ddpmpp)
        self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
        self.loss_fn = loss.EDMLoss()
        p = run["training"].get("augment_p", 0.0)
        self.augment_pipe = (
            augment.AugmentPipe(p=p, xflip=1e8, yflip=1, scale=1, rotate_frac=1, aniso=1,
                                translate_frac=1) if p > 0 else None
        )  # fmt: skip
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=1e-3, betas=[0.9, 0.999],
                                          eps=1e-8)  # fmt: skip
        self.batch = batch
        generator = torch.Generator().manual_seed(0)
        shape = (4, batch, 3, net["resolution"], net["resolution"])
        self.batches = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
        self.batches = self.batches.to(device)
        self.calls = 0
        self.params = count_parameters(self.net.model)
        self.mode = "fp16" if self.fp16 else "fp32"
        self.cur_nimg = 0

    def __call__(self) -> None:
        images = self.batches[self.calls % len(self.batches)].to(torch.float32) / 127.5 - 1
        self.calls += 1
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss_fn(net=self.net, images=images, labels=None,
                            augment_pipe=self.augment_pipe)  # fmt: skip
        loss.sum().mul(1.0 / self.batch).backward()
        for g in self.optimizer.param_groups:
            g["lr"] = 1e-3 * min(self.cur_nimg / max(10_000 * 1000, 1e-8), 1)
        for param in self.net.parameters():
            if param.grad is not None:
                torch.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
        self.optimizer.step()
        ema_halflife_nimg = min(500 * 1000, self.cur_nimg * 0.05)
        ema_beta = 0.5 ** (self.batch / max(ema_halflife_nimg, 1e-8))
        for p_ema, p_net in zip(self.ema.parameters(), self.net.parameters(), strict=True):
            p_ema.copy_(p_net.detach().lerp(p_ema, ema_beta))
        self.cur_nimg += self.batch


class OurStep:
    """`Trainer.step` with the run's config and the mode's speed flags."""

    def __init__(self, run: dict[str, Any], device: torch.device) -> None:
        batch = run["training"]["batch_size"]
        dataset = synthetic_dataset(4 * batch, run["network"]["resolution"])
        self.trainer = Trainer(run, dataset, World(rank=0, size=1, device=device))
        self.permutation = epoch_permutation(len(dataset), self.trainer.config.seed, 0)
        self.params = count_parameters(self.trainer.state.network)

    def __call__(self) -> None:
        if self.trainer.state.epoch_step == self.trainer.steps_per_epoch:
            self.trainer.state.epoch_step = 0
        self.trainer.step(self.permutation)


def measure(
    make: Callable[[], Any],
    device: torch.device,
    batch: int,
    warmup: int,
    steps: int,
    flops: int | None,
    peak: float | None,
) -> dict[str, Any]:
    """Build a step with `make`, time it, and derive images/s, TFLOP/s and MFU."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step = make()
    if flops is None:
        flops = count_step_flops(step)
    elapsed = time_calls(step, device, warmup, steps)
    row = {
        "params": step.params,
        "mode": step.mode,
        "images_per_s": steps * batch / elapsed,
        "step_ms": 1000 * elapsed / steps,
        "flops_per_step": flops,
        "tflops": flops * steps / elapsed / 1e12,
        "mfu": mfu(flops, steps / elapsed, peak),
        "peak_memory_mib": peak_memory_mib(device),
    }
    if hasattr(step, "ema_kind"):
        row["ema"] = step.ema_kind
    del step
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def _our_maker(run: dict[str, Any], device: torch.device, mode: str) -> Callable[[], OurStep]:
    def make() -> OurStep:
        step = OurStep(run, device)
        step.mode = mode
        return step

    return make


def benchmark_case(
    case: str,
    config: dict[str, Any],
    device: torch.device,
    batch: int,
    warmup: int,
    steps: int,
    our_modes: list[str],
    ddae_repo: Path | None,
    edm_repo: Path | None,
    peak: float | None,
) -> list[dict[str, Any]]:
    """Rows for one case: ours in each mode, then DDAE's step and (DDPM++) EDM's step."""
    rows = []
    eager = paper_run(config, case, batch, "fast")
    flops_ours = count_step_flops(OurStep(eager, device))  # eager: compiled code is not counted
    for mode in our_modes:
        run = paper_run(config, case, batch, mode)
        rows.append({"case": case, "code": "ours", "batch": batch})
        rows[-1].update(measure(_our_maker(run, device, mode), device, batch, warmup, steps,
                                flops_ours, peak))  # fmt: skip
    theirs: list[tuple[str, Callable[[], Any]]] = []
    if ddae_repo is not None:
        theirs.append(("ddae", lambda: DdaeStep(ddae_repo, eager, batch, device)))
    if edm_repo is not None and eager["network"]["arch"] == "ddpmpp":
        theirs.append(("edm", lambda: EdmStep(edm_repo, eager, batch, device)))
    for code, make in theirs:
        row: dict[str, Any] = {"case": case, "code": code, "batch": batch}
        saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        if code == "edm":  # training_loop.py turns TF32 off for its whole run
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            row.update(measure(make, device, batch, warmup, steps, None, peak))
        except torch.OutOfMemoryError:
            row["error"] = "out of memory"
            gc.collect()
            torch.cuda.empty_cache()
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
        rows.append(row)
    best_ours = max((r["images_per_s"] for r in rows if r["code"] == "ours"), default=None)
    for row in rows:
        if row["code"] != "ours" and "images_per_s" in row and best_ours:
            row["ours_over_theirs"] = best_ours / row["images_per_s"]
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    header = ["case", "code", "mode", "params", "batch", "img/s", "ms/step", "GFLOP/step",
              "TFLOP/s", "MFU", "peak MiB", "ours/theirs"]  # fmt: skip
    lines = [header]
    for r in rows:
        if "error" in r:
            lines.append([r["case"], r["code"], "", "", str(r["batch"]), r["error"]] + [""] * 6)
            continue
        lines.append([
            r["case"], r["code"], r["mode"], f"{r['params'] / 1e6:.1f}M", str(r["batch"]),
            f"{r['images_per_s']:.1f}", f"{r['step_ms']:.1f}", f"{r['flops_per_step'] / 1e9:.1f}",
            f"{r['tflops']:.2f}", "n/a" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%",
            f"{r['peak_memory_mib']:.0f}",
            f"{r['ours_over_theirs']:.2f}x" if "ours_over_theirs" in r else "",
        ])  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ddae-repo", type=Path, required=True,
                        help="a checkout of https://github.com/FutureXiang/ddae")  # fmt: skip
    parser.add_argument(
        "--edm-repo", type=Path, help="a checkout of https://github.com/NVlabs/edm (DDPM++ cases)"
    )
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--modes", nargs="+", choices=list(MODES),
                        help="our modes; default fast (+ fast+compile on CUDA)")  # fmt: skip
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument(
        "--batch-size", type=int, help="global batch; default the run's own on CUDA, 4 on CPU"
    )
    parser.add_argument("--warmup", type=int, help="untimed steps; default 10 CUDA, 1 CPU")
    parser.add_argument("--steps", type=int, help="timed steps; default 30 CUDA, 2 CPU")
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    try:
        args.ddae_repo = check_checkout(args.ddae_repo, DDAE_FILES, "FutureXiang/ddae")
        if args.edm_repo is not None:
            args.edm_repo = check_checkout(args.edm_repo, EDM_FILES, "NVlabs/edm")
    except CheckoutError as error:
        parser.error(str(error))
    for name in ("batch_size", "warmup", "steps"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "warmup" else 1):
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(device)
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    peak = peak_tflops(name) if cuda else None
    modes = args.modes or (["fast", "fast+compile"] if cuda else ["fast"])
    modes = [m for m in modes if cuda or not MODES[m]["compile"]]
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 1)
    steps = args.steps or (30 if cuda else 2)
    config = yaml.safe_load(args.config.read_text())
    print(f"device {device} ({name}), torch {torch.__version__}, "
          f"bf16 peak {peak if peak else 'unknown (no MFU)'} TFLOP/s")  # fmt: skip
    print(f"{warmup} warm-up + {steps} timed steps; ddae {args.ddae_repo}; edm {args.edm_repo}\n")
    rows = []
    for case in args.cases:
        run = config["pretraining"][case]
        batch = args.batch_size or (run["training"]["batch_size"] if cuda else 4)
        print(f"  {case}, batch {batch} ...", flush=True)
        rows += benchmark_case(case, config, device, batch, warmup, steps, modes,
                               args.ddae_repo, args.edm_repo, peak)  # fmt: skip
    print()
    print(format_table(rows))
    if not cuda:
        print("\nnote: CPU: ours runs fp32 (bf16/channels_last are CUDA only), theirs fp32 too.")
    if args.json:
        report = {"device": str(device), "device_name": name, "peak_bf16_tflops": peak,
                  "torch": torch.__version__, "warmup": warmup, "steps": steps,
                  "rows": rows}  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
        print(f"wrote {args.json}")
    return rows


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


if __name__ == "__main__":
    main()
