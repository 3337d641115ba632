"""Supervised classifier training shared by fine-tuning and the from-scratch baselines.

One loop serves the classification rules of the paper: fine-tuning truncated DDAE encoders
(Sec. 4.1, Table 7; DiT on cached latents, Sec. 4.2), training the same truncated encoders from
scratch and a supervised WideResNet-28-10 (Figure 5 "Scratch", Table 8). It runs as one process
or under ``torchrun`` (`ddae.distributed`), like pre-training (`ddae.training`):

- the inputs come from a `ddae.sources.ClassifierData` (`ddae.sources.Source.classifier_data`).
  `ImageData`: the training split lives on the device as uint8 and each global batch is
  augmented there with `ddae.batching.augment_batch` (RandomHorizontalFlip + RandomCrop(size, 4),
  Tables 6–8), flips and crops drawn from one saved generator for the whole global batch.
  `ddae.sources.LatentData`: one cached (already augmented) VAE latent version per image and
  epoch (Appendix A). The order is
  `epoch_permutation(seed, epoch)`, cut into steps as the authors' loader cuts it
  (`ddae.batching.EpochBatches`: the last batch partial), and every rank keeps its slice of each
  global batch, so N processes follow one process with the same global batch (BatchNorm
  statistics aside: they are per process, as in the official DDP code);
- learning rate per epoch, as the official DDAE code (linear.py, noisy_classifier_WRN.py): a
  linear warm-up ``lr·(e+1)/W`` for the first W epochs, then PyTorch's chained
  ``CosineAnnealingLR(T_max=epochs)`` stepped once per epoch (decays towards 0);
- plain cross-entropy (the official code uses ``nn.CrossEntropyLoss()``, no label smoothing);
- the network trains in train mode (dropout, BatchNorm batch statistics) from every epoch's first
  step, a resumed one included, and is in eval mode only while the test split is evaluated (the
  official scripts call ``model.train()`` in their training loops; a pre-trained network comes
  from `ddae.checkpoints.load_network` in eval mode);
- after every epoch (and every few minutes inside one) the partial state — weights, optimizer,
  generator, every rank's RNG, history — is written atomically to ``state_dir/partial.pt``; a
  rerun with the same identity (model, data, config) resumes from it bit for bit on CPU, a
  different identity is ignored with a warning, and a damaged file raises `CheckpointError`
  naming it; the first metrics line after a resume carries ``resumed_from`` (the restored step;
  that epoch's ``seconds`` count from the resume);
- the un-augmented test split is evaluated after every epoch (sharded over ranks).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ddae import learning_rate
from ddae.batching import EpochBatches, epoch_permutation
from ddae.checkpoints import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    partial_state_lock,
    restore_rng_state,
    save_checkpoint,
)
from ddae.configs import ConfigError
from ddae.datasets.format import ImageDataset
from ddae.distributed import World, barrier, gather_objects, mean_across
from ddae.learning_rate import peak_lr
from ddae.result_writers import append_jsonl, drop_metrics_after
from ddae.settings.classifiers import ClassifierTrainingConfig
from ddae.sources import ClassifierData, ImageData  # re-exported: the trainer's data
from ddae.training_metrics import TrainingError

log = logging.getLogger(__name__)

PARTIAL_STATE = "partial.pt"


def lr_at_epoch(epoch: int, config: ClassifierTrainingConfig) -> float:
    """lr of 0-based `epoch`: the official warm-up + per-epoch chained CosineAnnealingLR
    (noisy_classifier_WRN.py, linear.py), `ddae.learning_rate.lr_at_epoch` "cosine"."""
    peak = peak_lr(config.lr, config.batch_size, config.lr_reference_batch)
    return learning_rate.lr_at_epoch(epoch, peak, config.epochs, config.warmup_epochs, "cosine")


@dataclass(frozen=True)
class ClassifierOptions:
    """How a training job runs; none of this changes the trained weights."""

    state_dir: Path | None = None  # partial state (outside Snakemake's outputs)
    metrics_path: Path | None = None  # jsonl, one line per epoch
    snapshot_every_seconds: float = 600.0  # partial state inside an epoch (and after each)
    snapshot_every_steps: int = 0  # also every N steps (0: time-based only)
    eval_every: int = 1  # evaluate the test split every N epochs (and after the last)
    eval_batch_size: int = 500  # per process
    progress: bool = True


@dataclass
class ClassifierState:
    """What changes during training: what the partial state restores."""

    epoch: int = 0  # completed epochs
    epoch_step: int = 0  # optimizer steps done inside the current epoch
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def _broadcast_buffers(world: World, module: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank before evaluating."""
    if world.size > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def _sum_across(world: World, value: Tensor) -> Tensor:
    return mean_across(world, value) * world.size if world.size > 1 else value


class ClassifierTrainer:
    """One classifier (model inputs → logits), its data, optimizer and state.

    ``train`` is an `ImageDataset` (then ``test`` is its test split, and the trainer wraps both
    in `ImageData`) or any `ClassifierData` (then ``test`` is None).
    """

    def __init__(
        self,
        build: Callable[[], nn.Module],
        train: ImageDataset | ClassifierData,
        test: ImageDataset | None,
        config: ClassifierTrainingConfig,
        world: World,
        identity: Mapping[str, Any],
    ) -> None:
        self.config, self.world, self.device = config, world, world.device
        self.identity = json.loads(json.dumps(identity))  # plain data, as torch.load returns it
        if config.batch_size % world.size:
            raise ConfigError(
                f"training.batch_size {config.batch_size} is not divisible by "
                f"{world.size} processes"
            )
        if isinstance(train, ClassifierData):
            if test is not None:
                raise TypeError("a ClassifierData source holds its own test split; pass None")
            self.data = train
        else:
            if test is None:
                raise TypeError("an ImageDataset training split needs its test split")
            self.data = ImageData(train, test, config, self.device)
        if config.batch_size > self.data.num_train:
            raise ConfigError(
                f"training.batch_size {config.batch_size} exceeds the {self.data.num_train} "
                "training images"
            )
        self.batches = EpochBatches(self.data.num_train, config.batch_size, world.size)
        self.steps_per_epoch = self.batches.steps
        self.resumed_from: int | None = None  # step of the partial state resumed (metrics mark)
        self.fast = self.device.type == "cuda"
        if self.fast:
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(config.seed)  # identical initial weights on every rank
        network = build().to(self.device)
        if self.fast and config.channels_last:
            network = network.to(memory_format=torch.channels_last)
        self.network = network
        self.optimizer = self._optimizer(network)
        self.generator = torch.Generator(self.device).manual_seed(config.seed)
        torch.manual_seed(config.seed * 1000 + world.rank)  # dropout differs per rank
        self.model: nn.Module = network
        if world.size > 1:
            ids = [self.device.index] if self.fast else None
            self.model = nn.parallel.DistributedDataParallel(network, device_ids=ids)
        self.state = ClassifierState()
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), dtype=torch.int64, device=self.device)

    def _optimizer(self, network: nn.Module) -> torch.optim.Optimizer:
        c = self.config
        if c.optimizer == "adam":
            return torch.optim.Adam(
                network.parameters(),
                lr=peak_lr(c.lr, c.batch_size, c.lr_reference_batch),
                betas=tuple(c.adam_betas),
                weight_decay=c.weight_decay,
                fused=self.fast,
            )
        return torch.optim.SGD(
            network.parameters(),
            lr=peak_lr(c.lr, c.batch_size, c.lr_reference_batch),
            momentum=c.momentum,
            weight_decay=c.weight_decay,
            nesterov=c.nesterov,
        )

    # --- partial state ------------------------------------------------------------------------

    def payload(self) -> dict[str, Any]:
        """Partial state; collective (every rank calls it), meaningful on rank 0."""
        s = self.state
        running = [self.loss_sum.cpu(), self.correct.cpu()]
        return {
            "identity": self.identity,
            "epoch": s.epoch,
            "epoch_step": s.epoch_step,
            "step": s.step,
            "history": s.history,
            "model": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "rng": gather_objects(self.world, capture_rng_state()),
            "running": gather_objects(self.world, running),
        }

    def save(self, path: Path) -> None:
        payload = self.payload()
        if self.world.is_main:
            save_checkpoint(payload, path)
        barrier(self.world)

    def resume(self, state_dir: Path | None) -> bool:
        """Continue from ``state_dir/partial.pt`` if it belongs to this job; True if it did."""
        if state_dir is None or not (state_dir / PARTIAL_STATE).exists():
            return False
        path = state_dir / PARTIAL_STATE
        payload = load_checkpoint(path, map_location="cpu")  # damage raises, naming the path
        if payload.get("identity") != self.identity:
            log.warning("ignoring partial state %s: it belongs to another job or config", path)
            return False
        if not 0 <= payload["epoch"] < self.config.epochs:
            log.warning("ignoring partial state %s: epoch %s", path, payload["epoch"])
            return False
        if not self.batches.counted_alike(payload["step"], payload["epoch"], payload["epoch_step"]):
            steps = self.steps_per_epoch
            log.warning("ignoring partial state %s: its epochs are not %d steps long", path, steps)
            return False
        try:
            self.network.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
            self.generator.set_state(payload["generator"].cpu())
        except (KeyError, RuntimeError, ValueError) as error:
            raise CheckpointError(f"{path}: cannot restore training state: {error}") from error
        s = self.state
        s.epoch, s.epoch_step, s.step = payload["epoch"], payload["epoch_step"], payload["step"]
        s.history = list(payload["history"])
        rng, running = payload["rng"], payload["running"]
        if len(rng) == self.world.size:
            restore_rng_state(rng[self.world.rank])
            loss_sum, correct = running[self.world.rank]
            self.loss_sum = loss_sum.to(self.device)
            self.correct = correct.to(self.device)
        else:  # another process count: reseed dropout deterministically, restart epoch stats
            log.warning(
                "%s: saved by %d processes, resuming with %d", path, len(rng), self.world.size
            )
            torch.manual_seed(self.config.seed * 1000 + self.world.rank + s.step)
            self.loss_sum = sum(r[0] for r in running).to(self.device) / len(running)
            self.correct = sum(r[1] for r in running).to(self.device) // len(running)
        if self.world.is_main:
            log.info("resuming from %s at epoch %d step %d", path, s.epoch, s.step)
        self.resumed_from = s.step
        return True

    # --- training -----------------------------------------------------------------------------

    def step(self, permutation: Tensor) -> None:
        """One optimizer step on this rank's slice of the next global batch."""
        c, s = self.config, self.state
        indices = self.batches.items(permutation, s.epoch_step)
        mine = self.batches.mine(self.world.rank)
        x0, labels = self.data.train_batch(indices, s.epoch, self.generator, mine)  # (b, C, H, W)
        if self.fast and c.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.fast and c.bf16):
            logits = self.model(x0)  # (b, classes)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=c.label_smoothing)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at_epoch(s.epoch, c)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.detach()
        self.correct += (logits.detach().argmax(dim=1) == labels).sum()
        s.step += 1
        s.epoch_step += 1

    @torch.no_grad()
    def evaluate(self, batch_size: int) -> float:
        """Top-1 accuracy (%) on the un-augmented test split, sharded over the ranks, in eval
        mode (the network's mode is restored afterwards)."""
        network = self.network
        _broadcast_buffers(self.world, network)
        training = network.training
        network.eval()
        num_test = self.data.num_test
        shard = torch.arange(self.world.rank, num_test, self.world.size)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        for chunk in shard.split(batch_size):
            x0, labels = self.data.test_batch(chunk)
            if self.fast and self.config.channels_last:
                x0 = x0.contiguous(memory_format=torch.channels_last)
            bf16 = self.fast and self.config.bf16
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = network(x0)
            correct += (logits.argmax(dim=1) == labels).sum()
        network.train(training)
        return 100.0 * _sum_across(self.world, correct).item() / num_test

    def _end_epoch(self, options: ClassifierOptions, started: float) -> dict[str, Any]:
        """Epoch statistics (after the NaN check), test accuracy when due, metrics line."""
        s, c = self.state, self.config
        mean_loss = mean_across(self.world, self.loss_sum / self.steps_per_epoch).item()
        if not math.isfinite(mean_loss):
            raise TrainingError(
                f"non-finite training loss {mean_loss} in epoch {s.epoch + 1}; lower the lr"
            )
        seen = self.batches.per_rank * self.world.size  # the sampler's share, padding included
        correct = _sum_across(self.world, self.correct).item()
        last = s.epoch + 1 == c.epochs
        due = last or (options.eval_every > 0 and (s.epoch + 1) % options.eval_every == 0)
        record = {
            "epoch": s.epoch + 1,
            "step": s.step,
            "lr": lr_at_epoch(s.epoch, c),
            "loss": mean_loss,
            "train_accuracy": 100.0 * correct / seen,
            "test_accuracy": self.evaluate(options.eval_batch_size) if due else None,
            "seconds": time.monotonic() - started,
        }
        s.history.append(record)
        if options.metrics_path is not None and self.world.is_main:
            mark = {} if self.resumed_from is None else {"resumed_from": self.resumed_from}
            append_jsonl(options.metrics_path, {**record, **mark})
        self.resumed_from = None
        s.epoch, s.epoch_step = s.epoch + 1, 0
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), dtype=torch.int64, device=self.device)
        return record

    @contextlib.contextmanager
    def resumed(self, options: ClassifierOptions) -> Iterator[None]:
        """Hold ``options.state_dir`` (the main rank locks it: a second job on the same partial
        state fails at once), continue from its partial state if it is this job's, and drop the
        metrics lines past the resumed step (each epoch's line once); the lock is released when
        the block, which runs `run` and writes the job's result, ends."""
        with contextlib.ExitStack() as held:
            if options.state_dir is not None and self.world.is_main:
                held.enter_context(partial_state_lock(options.state_dir))
            self.resume(options.state_dir)
            if self.world.is_main:
                drop_metrics_after(options.metrics_path, self.state.step)
            yield

    def run(self, options: ClassifierOptions) -> list[dict[str, Any]]:
        """Train to ``config.epochs``; returns the per-epoch history."""
        s, c = self.state, self.config
        bar = tqdm(
            total=c.epochs * self.steps_per_epoch,
            initial=s.step,
            disable=not (options.progress and self.world.is_main),
            unit="step",
            dynamic_ncols=True,
            mininterval=0.1 if sys.stderr.isatty() else 60.0,
        )
        partial = options.state_dir / PARTIAL_STATE if options.state_dir else None
        last_snapshot = started = time.monotonic()
        while s.epoch < c.epochs:
            self.network.train()  # every epoch (and a resumed one) from its first step
            permutation = epoch_permutation(self.data.num_train, c.seed, s.epoch)
            while s.epoch_step < self.steps_per_epoch:
                self.step(permutation)
                bar.update(1)
                every = options.snapshot_every_steps
                due = every > 0 and s.step % every == 0
                if s.step % 20 == 0 and partial is not None:
                    elapsed = time.monotonic() - last_snapshot >= options.snapshot_every_seconds
                    due = due or bool(gather_objects(self.world, elapsed)[0])
                if partial is not None and due and s.epoch_step < self.steps_per_epoch:
                    self.save(partial)
                    last_snapshot = time.monotonic()
            record = self._end_epoch(options, started)
            started = time.monotonic()
            accuracy = record["test_accuracy"]
            bar.set_postfix(
                loss=f"{record['loss']:.4f}",
                test=f"{accuracy:.2f}" if accuracy is not None else "-",
            )
            if partial is not None and s.epoch < c.epochs:
                self.save(partial)
                last_snapshot = time.monotonic()
        bar.close()
        return s.history
