"""Pre-training's metrics log (`ddae.training`, paper Appendix A): the run's ``metrics.jsonl``.

One JSON line per window of optimizer steps: ``step`` (the window's last), ``epoch`` (steps as a
fraction of epochs), ``loss`` (the mean over the window's steps), ``lr``, ``images_per_s``. A
window closes every ``log_every_steps`` steps and at every epoch's end, so a run trained in one go
and the same run as a chain of epoch jobs log the same lines.

A job that continues an interrupted one from its partial state first drops the lines past the
restored step (`ddae.result_writers.drop_metrics_after`), then marks its first line with
``resumed_from``, the restored step: that line's loss and rate cover the steps after it only, and
the interrupted process's steps between its last kept line and ``resumed_from`` are in no line.
The losses stay on the device until a line is written (one host read per window), which is also
where a non-finite loss stops training, naming its step.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, inconsistent inputs)."""


class LossWindow:
    """Losses of consecutive steps, kept on the device until read (one host sync per window)."""

    def __init__(self, first_step: int, steps_per_epoch: int, resumed_from: int | None = None):
        self.first_step, self.steps_per_epoch = first_step, steps_per_epoch
        self.resumed_from = resumed_from  # the step restored just before this window, if any
        self.losses: list[Tensor] = []
        self.images = 0
        self.start = time.monotonic()

    def __len__(self) -> int:
        return len(self.losses)

    def add(self, loss: Tensor, images: int) -> None:
        """One step's loss, and how many images (summed over the processes) it trained on."""
        self.losses.append(loss)
        self.images += images

    def losses_on_host(self) -> Tensor:
        """The window's losses; raises `TrainingError` naming the first non-finite step."""
        if not self.losses:
            return torch.empty(0)
        losses = torch.stack(self.losses).float().cpu()
        bad = (~torch.isfinite(losses)).nonzero().flatten()
        if len(bad):
            step = self.first_step + int(bad[0])
            epoch, in_epoch = divmod(step - 1, self.steps_per_epoch)
            raise TrainingError(
                f"non-finite loss {losses[bad[0]].item()} at step {step} (epoch {epoch + 1}, "
                f"step {in_epoch + 1} of {self.steps_per_epoch}); lower the learning rate"
            )
        return losses

    def record(self, lr: float) -> dict[str, float]:
        """The metrics line of this window (step, epoch, loss, lr, images/s, resumed_from)."""
        losses = self.losses_on_host()
        last = self.first_step + len(losses) - 1
        record = {
            "step": last,
            "epoch": last / self.steps_per_epoch,
            "loss": losses.mean().item(),
            "lr": lr,
            "images_per_s": self.images / max(time.monotonic() - self.start, 1e-9),
        }
        if self.resumed_from is not None:
            record["resumed_from"] = self.resumed_from
        return record
