"""The one learning-rate convention of every training stage (pre-training, Appendix A / Table 5;
probes, Table 6 and Appendix B; fine-tuning, Table 7; scratch and WideResNet, Table 8; the
noise-conditional classifiers of Figure 6).

Every stage's config states its learning rate the way the papers and the authors' code do, at a
reference batch, with two keys:

* ``lr``: the learning rate at ``lr_reference_batch`` images per optimizer step;
* ``lr_reference_batch``: N > 0 scales it linearly to the stage's global ``batch_size`` B,
  peak = lr · B / N. The authors' code (FutureXiang/ddae ``train.py``, ``linear.py``,
  ``noisy_classifier_DDAE.py``) multiplies its per-GPU ``lrate`` by the GPU count at a fixed
  per-GPU batch, which is this rule with N = the per-GPU batch (Table 6: 1e-3 per 128 images,
  4e-3 at 512). 0 uses ``lr`` at any batch (``noisy_classifier_WRN.py`` does not scale; EDM
  states its lr at its batch 512).

and one schedule per epoch, `lr_at_epoch`: a linear warm-up over ``warmup_epochs``, then either
``constant`` (pre-training, train.py) or ``cosine`` (PyTorch's ``CosineAnnealingLR(T_max=epochs)``
stepped once per epoch: linear.py, noisy_classifier_*.py).
"""

from __future__ import annotations

import math
from typing import Literal

Schedule = Literal["constant", "cosine"]


def peak_lr(lr: float, batch_size: int, reference_batch: int) -> float:
    """The lr after warm-up: ``lr`` stated at ``reference_batch`` images, scaled linearly to
    the global ``batch_size`` (``reference_batch`` 0: ``lr`` as given)."""
    if reference_batch < 0:
        raise ValueError(f"lr_reference_batch must be >= 0, got {reference_batch}")
    if reference_batch > 0:
        return lr * batch_size / reference_batch
    return lr


def lr_at_epoch(
    epoch: int, peak: float, epochs: int, warmup_epochs: int, schedule: Schedule
) -> float:
    """The lr of 0-based ``epoch`` (constant within an epoch), as the authors' code sets it.

    ``constant`` (DDAE train.py): peak · min((e + 1) / W, 1).
    ``cosine`` (linear.py, noisy_classifier_*.py): ``peak·(e+1)/W`` for the first W epochs,
    then ``CosineAnnealingLR(optim, epochs)`` stepped after every epoch, whose recursive form
    continues from the last warm-up value: peak·(1 + cos(π e/E)) / (1 + cos(π (W−1)/E)) for
    e ≥ W; without warm-up the closed form peak·(1 + cos(π e/E)) / 2 (decays towards 0; the
    last epoch is not at 0). The two warm-ups are written as the two scripts write them (they
    can differ in the last bit).
    """
    if schedule == "constant":
        if warmup_epochs <= 0:
            return peak
        return peak * min((epoch + 1) / warmup_epochs, 1.0)
    if schedule != "cosine":
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    if epoch < warmup_epochs:
        return peak * (epoch + 1) / warmup_epochs
    if warmup_epochs == 0:
        return peak * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    return (
        peak
        * (1.0 + math.cos(math.pi * epoch / epochs))
        / (1.0 + math.cos(math.pi * (warmup_epochs - 1) / epochs))
    )
