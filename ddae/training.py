"""Diffusion pre-training, resumable bit for bit (paper Appendix A, Table 5): `Trainer` holds one
run's network, EMA, optimizer, data and randomness, takes optimizer steps (`Trainer.step`),
trains to an epoch while snapshotting its partial state (`Trainer.run_to`) and saves and
restores checkpoints. Where a job starts (partial state, start checkpoint or scratch) is
`ddae.training_resume.train_to_epoch`'s.

An epoch is cut into steps as the authors' loader cuts it (`ddae.batching.EpochBatches`: the
last batch partial, CIFAR-10 at 4 × 128 in 98 steps, the last 4 × 84); a checkpoint whose step
count cuts epochs otherwise (written while the last batch was dropped) is refused. Every draw of
randomness is reproducible: the shuffling order is a function of (seed, epoch); σ, noise, flips
and EDM augmentations come from one training generator whose state is saved; dropout uses the
global RNGs, saved per rank, and the network is in train mode from every epoch's first step.
Hence 2 epochs in one go and 1 + resume + 1 give bitwise identical weights on CPU. Randomness is
drawn for the whole global batch on every rank and each rank keeps its sampler's share, so N
processes under torchrun follow the same trajectory as one process with the same global batch
(up to floating-point reduction order; `EpochBatches` says when padding differs).

Official-code details kept here: per-epoch linear lr warm-up, gradient-norm clipping at 1.0,
and the optional ema_pytorch decay warm-up (decay_k = min(β, 1 − k^(−power))) of the DDAE code,
counted in optimizer steps as ema.update() is (98 a CIFAR-10 epoch, the partial one included).
"""

from __future__ import annotations

import copy
import logging
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ddae import learning_rate
from ddae.augment import AugmentConfig, AugmentPipe
from ddae.batching import EpochBatches, augment_batch, epoch_permutation, to_model_range
from ddae.checkpoints import (
    CheckpointError,
    capture_rng_state,
    restore_rng_state,
    save_checkpoint,
)
from ddae.configs import ConfigError, from_mapping
from ddae.datasets.format import ImageDataset
from ddae.diffusion import Framework, build_framework
from ddae.distributed import (
    World,
    barrier,
    broadcast_object,
    gather_objects,
    mean_across,
)
from ddae.learning_rate import peak_lr
from ddae.networks import build_network
from ddae.result_writers import append_jsonl
from ddae.settings.pretraining import TrainingConfig, normalize_run
from ddae.training_metrics import LossWindow

log = logging.getLogger(__name__)

PARTIAL_STATE = "partial.pt"
TIME_CHECK_STEPS = 16  # multi-process runs compare clocks for a time snapshot this often


def ema_decay_at(step: int, config: TrainingConfig) -> float:
    """EMA decay for the `step`-th update (1-based), with the optional warm-ups.

    ema_pytorch (DDAE code): min(β, 1 − step^(−power)), and a plain copy at the first two
    updates: the DDAE train.py builds ``EMA(diff, beta, update_after_step=0, update_every=1)``,
    whose ``update()`` (ema-pytorch 0.2.x, ``ema_pytorch.py``) copies the model while its step
    count is ≤ update_after_step (update 1) and again on its first averaging update (update 2,
    the ``initted`` copy), then averages with 1 − (1 + (step − 1))^(−power) = 1 − step^(−power).
    EDM: the half-life (in steps) is at most ``ema_rampup_ratio · step``, i.e. decay ≤
    0.5^(1 / (ratio · step)).
    """
    decay = config.ema_decay
    if config.ema_warmup_power > 0:
        if step <= 2:
            return 0.0
        decay = min(decay, 1.0 - step ** (-config.ema_warmup_power))
    if config.ema_rampup_ratio > 0:
        decay = min(decay, 0.5 ** (1.0 / (config.ema_rampup_ratio * step)))
    return decay


def lr_at_epoch(epoch: int, config: TrainingConfig) -> float:
    """Per-epoch linear warm-up of the DDAE code, then constant (`ddae.learning_rate`)."""
    peak = peak_lr(config.lr, config.batch_size, config.lr_reference_batch)
    return learning_rate.lr_at_epoch(epoch, peak, 0, config.warmup_epochs, "constant")


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model for parameters; buffers are copied."""
    ema_params = list(ema.parameters())
    model_params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_params, model_params, 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers(), strict=True):
        ema_buffer.copy_(buffer)


@dataclass
class TrainState:
    """Everything that changes during training, i.e. what a checkpoint restores."""

    network: nn.Module
    ema: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    epoch: int = 0  # completed epochs
    epoch_step: int = 0  # optimizer steps done inside the current epoch
    step: int = 0  # optimizer steps in total
    lineage: str = ""  # id shared by every checkpoint of one training history


@dataclass(frozen=True)
class TrainOptions:
    """How a job runs; none of this changes the trained weights."""

    state_dir: Path | None = None  # where the partial state lives (outside Snakemake outputs)
    snapshot_every_seconds: float = 600.0
    snapshot_every_steps: int = 0  # also snapshot every N steps (0: time-based only)
    metrics_path: Path | None = None  # jsonl: step, epoch, loss, lr, images/s
    log_every_steps: int = 50
    progress: bool = True
    device: str | None = None


class Trainer:
    """Holds one run's network, framework, data and state; `run_to` advances it."""

    def __init__(self, run: Mapping[str, Any], dataset: ImageDataset, world: World) -> None:
        self.run = normalize_run(run)
        self.config: TrainingConfig = from_mapping(TrainingConfig, self.run["training"])
        self.world = world
        self.device = world.device
        if self.config.batch_size % world.size:
            raise ConfigError(
                f"training.batch_size {self.config.batch_size} is not divisible by "
                f"{world.size} processes"
            )
        self.images = dataset.images.to(self.device)  # uint8 (N, C, H, W), augmented on device
        if self.config.batch_size > len(self.images):
            raise ConfigError(
                f"training.batch_size {self.config.batch_size} exceeds the "
                f"{len(self.images)} training images"
            )
        self.batches = EpochBatches(len(self.images), self.config.batch_size, world.size)
        self.steps_per_epoch = self.batches.steps
        self.resumed_from: int | None = None  # step of the partial state resumed (metrics mark)
        self.framework: Framework = build_framework(self.run["framework"])
        self.augment = (
            AugmentPipe(AugmentConfig(p=self.config.augment_p))
            if self.config.augment_p > 0
            else None
        )
        self.fast = self.device.type == "cuda"
        if self.fast:
            torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest kernels
        # Batches are drawn on a side stream (see `_batch_stream`); it starts after the upload.
        self._batch_stream = torch.cuda.Stream(self.device) if self.fast else None
        if self._batch_stream is not None:
            self._batch_stream.wait_stream(torch.cuda.current_stream(self.device))
        self._permutation: tuple[Tensor, Tensor] | None = None  # (host order, its device copy)
        self.state = self._fresh_state()
        self.model = self._wrap(self.state.network)

    # --- construction -------------------------------------------------------------------------

    def _fresh_state(self) -> TrainState:
        torch.manual_seed(self.config.seed)  # identical initial weights on every rank
        network = build_network(self.run["network"]).to(self.device)
        memory_format = torch.channels_last if self.fast and self.config.channels_last else None
        if memory_format is not None:
            network = network.to(memory_format=memory_format)
        ema = copy.deepcopy(network).requires_grad_(False).eval()
        optimizer = torch.optim.Adam(
            network.parameters(),
            lr=peak_lr(self.config.lr, self.config.batch_size, self.config.lr_reference_batch),
            betas=tuple(self.config.adam_betas),
            eps=self.config.adam_eps,
            fused=self.fast,
        )
        generator = torch.Generator(self.device).manual_seed(self.config.seed)
        torch.manual_seed(self.config.seed * 1000 + self.world.rank)  # dropout differs per rank
        lineage = broadcast_object(self.world, uuid.uuid4().hex)  # one id for all ranks
        return TrainState(network, ema, optimizer, generator, lineage=lineage)

    def _wrap(self, network: nn.Module) -> nn.Module:
        """DDP first, then torch.compile: compiling the DDP module lets Dynamo's DDPOptimizer
        split the graph at gradient-bucket boundaries, so each bucket's all-reduce overlaps the
        rest of the backward pass (DDP around a compiled module would see all gradients only
        once the whole compiled backward has finished)."""
        model = network
        if self.world.size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if self.fast and self.config.compile:
            model = torch.compile(model)
        return model

    # --- checkpoints --------------------------------------------------------------------------

    def payload(self) -> dict[str, Any]:
        """Checkpoint contents; collective (every rank must call it), meaningful on rank 0."""
        s = self.state
        return {
            "run": self.run,
            "epoch": s.epoch,
            "epoch_step": s.epoch_step,
            "step": s.step,
            "lineage": s.lineage,
            "model": s.network.state_dict(),
            "ema": s.ema.state_dict(),
            "optimizer": s.optimizer.state_dict(),
            "generator": s.generator.get_state(),
            "rng": gather_objects(self.world, capture_rng_state()),
        }

    def load(self, payload: Mapping[str, Any], path: Path) -> None:
        """Restore the state saved in ``payload`` (read from ``path``)."""
        if payload.get("run") != self.run:
            raise CheckpointError(f"{path}: checkpoint was trained with a different run config")
        if not self.cut_alike(payload):
            raise CheckpointError(
                f"{path}: step {payload.get('step')} at epoch {payload.get('epoch')} does not cut "
                f"epochs into {self.steps_per_epoch} steps (written when the last partial batch "
                "was dropped); retrain the run"
            )
        s = self.state
        try:
            s.network.load_state_dict(payload["model"])
            s.ema.load_state_dict(payload["ema"])
            s.optimizer.load_state_dict(payload["optimizer"])
            s.generator.set_state(payload["generator"].cpu())
        except (KeyError, RuntimeError, ValueError) as error:
            raise CheckpointError(f"{path}: cannot restore training state: {error}") from error
        s.epoch, s.epoch_step, s.step = payload["epoch"], payload["epoch_step"], payload["step"]
        s.lineage = payload["lineage"]
        rng = payload["rng"]
        if len(rng) == self.world.size:
            restore_rng_state(rng[self.world.rank])
        else:  # another process count: dropout streams cannot continue, reseed deterministically
            log.warning(
                "%s: saved by %d processes, resuming with %d", path, len(rng), self.world.size
            )
            torch.manual_seed(self.config.seed * 1000 + self.world.rank + s.step)

    def cut_alike(self, payload: Mapping[str, Any]) -> bool:
        """Whether ``payload``'s step count cuts epochs into this run's `steps_per_epoch`."""
        return self.batches.counted_alike(
            payload.get("step"), payload.get("epoch", 0), payload.get("epoch_step", 0)
        )

    def save(self, path: Path) -> None:
        payload = self.payload()
        if self.world.is_main:
            save_checkpoint(payload, path)
        barrier(self.world)

    # --- one step -----------------------------------------------------------------------------

    def _global_batch(self, permutation: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """This rank's slice of (x0, σ, noise, augment labels) for the next global batch.

        On CUDA the batch is drawn on a side stream that never waits for the training stream:
        the EDM augmentation's one host read (its padding margins set a shape) then waits for
        the batch's own kernels only, while the previous step keeps the GPU busy. The draws
        and their order are the same on any stream, so the batch is bitwise the same.
        """
        if self._batch_stream is None:
            return self._draw_batch(permutation)
        main = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self._batch_stream):
            batch = self._draw_batch(permutation)
        main.wait_stream(self._batch_stream)
        for tensor in batch:
            if tensor is not None:
                tensor.record_stream(main)  # allocated on the side stream, used on the main one
        return batch

    def _device_permutation(self, permutation: Tensor) -> Tensor:
        """`permutation` on the device, copied once per epoch rather than once per step."""
        if permutation.device == self.device:
            return permutation
        if self._permutation is None or self._permutation[0] is not permutation:
            self._permutation = (permutation, permutation.to(self.device))
        return self._permutation[1]

    def _draw_batch(self, permutation: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        c, s = self.config, self.state
        indices = self.batches.items(self._device_permutation(permutation), s.epoch_step)
        images = augment_batch(
            self.images[indices], hflip=c.hflip, crop_padding=c.crop_padding, generator=s.generator
        )
        x0 = to_model_range(images)
        labels = None
        if self.augment is not None:
            x0, labels = self.augment(x0, s.generator)
        sigma = self.framework.sample_training_sigma(len(indices), s.generator)
        noise = torch.randn(x0.shape, generator=s.generator, device=self.device)
        mine = self.batches.mine(self.world.rank)
        return x0[mine], sigma[mine], noise[mine], None if labels is None else labels[mine]

    def step(self, permutation: Tensor) -> Tensor:
        """One optimizer step on the next global batch; returns the rank-mean loss (detached).

        The loss stays on the device (no host sync per step); `run_to` checks it for NaN/inf
        once per metrics window and before every save, naming the exact step.
        """
        c, s = self.config, self.state
        x0, sigma, noise, labels = self._global_batch(permutation)
        if self.fast and c.channels_last:
            x0, noise = (t.contiguous(memory_format=torch.channels_last) for t in (x0, noise))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.fast and c.bf16):
            loss = self.framework.training_loss(self.model, x0, sigma, noise, labels).mean()
        for group in s.optimizer.param_groups:
            group["lr"] = lr_at_epoch(s.epoch, c)
        s.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if c.grad_clip > 0:
            nn.utils.clip_grad_norm_(s.network.parameters(), c.grad_clip)
        s.optimizer.step()
        s.step += 1
        s.epoch_step += 1
        update_ema(s.ema, s.network, ema_decay_at(s.step, c))
        return mean_across(self.world, loss.detach())

    # --- the loop -----------------------------------------------------------------------------

    def run_to(self, target_epoch: int, options: TrainOptions) -> None:
        """Train until `target_epoch` epochs are complete, snapshotting partial state."""
        s = self.state
        bar = tqdm(
            total=target_epoch * self.steps_per_epoch,
            initial=s.step,
            disable=not (options.progress and self.world.is_main),
            unit="step",
            dynamic_ncols=True,
            mininterval=0.1 if sys.stderr.isatty() else 60.0,  # log files get a line a minute
        )
        window = LossWindow(s.step + 1, self.steps_per_epoch, self.resumed_from)
        last_snapshot = time.monotonic()
        permutation, permutation_epoch = None, -1
        while s.epoch < target_epoch:
            if permutation_epoch != s.epoch:  # an epoch starts (or resumes): train mode, as
                s.network.train()  # train.py's diff.train() every epoch
                permutation = epoch_permutation(len(self.images), self.config.seed, s.epoch)
                permutation_epoch = s.epoch
            images = self.batches.size(s.epoch_step)
            window.add(self.step(permutation), images)
            bar.update(1)
            epoch_done = s.epoch_step == self.steps_per_epoch
            time_due = self._time_for_snapshot(options, last_snapshot)  # whatever the window
            if len(window) >= options.log_every_steps or epoch_done:
                record = window.record(lr_at_epoch(s.epoch, self.config))
                bar.set_postfix(loss=f"{record['loss']:.4f}", ips=f"{record['images_per_s']:.0f}")
                self._append_metrics(options.metrics_path, record)
                window = LossWindow(s.step + 1, self.steps_per_epoch)
            if epoch_done:
                s.epoch, s.epoch_step = s.epoch + 1, 0
            every = options.snapshot_every_steps
            steps_due = every > 0 and s.step % every == 0
            if options.state_dir and (time_due or steps_due) and s.epoch < target_epoch:
                window.losses_on_host()  # never save a state that has seen a NaN
                self.save(options.state_dir / PARTIAL_STATE)
                last_snapshot = time.monotonic()
        bar.close()

    def _time_for_snapshot(self, options: TrainOptions, last_snapshot: float) -> bool:
        """Whether the snapshot interval has passed; rank 0's clock decides for every rank.

        Asked after every step; with several processes the clocks are compared (a collective)
        every `TIME_CHECK_STEPS` steps only.
        """
        if options.state_dir is None:
            return False
        if self.world.size > 1 and self.state.step % TIME_CHECK_STEPS:
            return False
        elapsed = time.monotonic() - last_snapshot >= options.snapshot_every_seconds
        return bool(gather_objects(self.world, elapsed)[0])

    def _append_metrics(self, path: Path | None, record: Mapping[str, Any]) -> None:
        if path is None or not self.world.is_main:
            return
        append_jsonl(path, record)
