"""Many linear probes trained jointly on cached features (paper Sec. 3.2, Appendix B; the
official ``linear.py --grid`` trains its (t, block) probes side by side). `ProbeBank` holds P
independent heads, `fit_cached_probes` trains and tests them on a feature cache's views, with
the options ``standardize`` and ``labels_per_class`` (`ddae.probing`'s docstring: not in the
paper, off by default). The protocol they follow is in `ddae.probing`'s docstring."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ddae import joblog
from ddae.batching import epoch_permutation
from ddae.configs import ConfigError
from ddae.per_item import VIEW_STREAM, item_seeds
from ddae.settings.probes import ProbeConfig

INIT_STREAM = 3  # seeds each probe's initialisation
SUBSET_STREAM = 4  # seeds the choice of the labels_per_class subset
BATCHNORM_EPS = 1e-5  # torch.nn.BatchNorm1d's default eps (``standardize``)


def labelled_subset(labels: Tensor, per_class: int | None, seed: int) -> Tensor:
    """Sorted indices of ``per_class`` items of every class (all items when None), chosen by a
    permutation seeded by (seed, SUBSET_STREAM); a class with fewer items is an error."""
    labels = torch.as_tensor(labels).cpu()
    if per_class is None:
        return torch.arange(len(labels))
    generator = torch.Generator().manual_seed(int(item_seeds((seed, SUBSET_STREAM), [0])[0]))
    order = torch.randperm(len(labels), generator=generator)
    chosen = []
    for label in torch.unique(labels).tolist():
        members = order[labels[order] == label][:per_class]
        if len(members) < per_class:
            raise ConfigError(
                f"labels_per_class: {per_class} exceeds the {len(members)} training items of "
                f"class {label}"
            )
        chosen.append(members)
    return torch.cat(chosen).sort().values


def standardizer(rows: Tensor) -> tuple[Tensor, Tensor]:
    """(mean, 1/√(var + eps)) over all but the last dimension of ``rows`` (float32): what
    BatchNorm1d(affine=False) applies in evaluation mode with these population statistics."""
    flat = rows.reshape(-1, rows.shape[-1]).float()
    mean = flat.mean(dim=0)
    scale = torch.rsqrt(flat.var(dim=0, unbiased=False) + BATCHNORM_EPS)
    return mean, scale


class ProbeBank:
    """P independent linear classifiers trained together with batched tensor ops.

    Probe p has its own input width D_p ≤ D_max; inputs arrive zero-padded as (P, B, D_max) and
    weights are stored as (P, D_max, C) with the padded rows at 0. Because the padded inputs are
    0, those rows get exactly zero gradient, Adam leaves them at 0 (m = v = 0 ⇒ no update), and
    probe p's loss, gradient and Adam state depend only on its own features: training P probes
    together is mathematically the same as training each alone (the only differences are the
    summation order inside the batched matmul, i.e. float rounding).

        logits_p = X_p W_p + b_p                        (B, C)
        L = Σ_p mean_b CE(logits_p[b], y[b])            ⇒ ∂L/∂W_p = ∂ mean_b CE_p / ∂W_p
    """

    def __init__(
        self,
        dims: Sequence[int],
        num_classes: int,
        keys: Sequence[Sequence[int]],
        seed: int,
        device: torch.device | str,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if len(dims) != len(keys) or not dims:
            raise ValueError("need one key per probe and at least one probe")
        self.dims = [int(d) for d in dims]
        self.num_classes = num_classes
        self.device = torch.device(device)
        self.dtype = dtype
        width = max(self.dims)
        weight = torch.zeros(len(dims), width, num_classes, dtype=torch.float64)
        bias = torch.zeros(len(dims), num_classes, dtype=torch.float64)
        generator = torch.Generator()
        for p, (dim, key) in enumerate(zip(self.dims, keys, strict=True)):
            # nn.Linear's default init: weight and bias ~ U(−1/√D, 1/√D); seeded per probe.
            generator.manual_seed(int(item_seeds((seed, INIT_STREAM, *key), [0])[0]))
            bound = 1.0 / math.sqrt(dim)
            w = torch.rand(num_classes, dim, generator=generator, dtype=torch.float64)
            b = torch.rand(num_classes, generator=generator, dtype=torch.float64)
            weight[p, :dim] = (2 * w - 1).T * bound
            bias[p] = (2 * b - 1) * bound
        self.weight = weight.to(self.device, dtype).requires_grad_()
        self.bias = bias.to(self.device, dtype).requires_grad_()
        # Adam, no weight decay (official linear.py); the lr is set per epoch.
        self.optimizer = torch.optim.Adam([self.weight, self.bias], lr=1.0)

    @property
    def num_probes(self) -> int:
        return len(self.dims)

    def logits(self, x: Tensor) -> Tensor:
        """(P, B, D_max) → (P, B, C)."""
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)

    def mean_losses(self, x: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(P,) each probe's mean cross-entropy over the rows of (P, B, D_max) ``x``, and the
        (P, B, C) logits."""
        logits = self.logits(x)
        probes, batch, classes = logits.shape
        losses = F.cross_entropy(
            logits.reshape(probes * batch, classes), labels.repeat(probes), reduction="none"
        ).view(probes, batch)
        return losses.mean(dim=1), logits

    def step(self, x: Tensor, labels: Tensor, lr: float) -> tuple[Tensor, Tensor]:
        """One Adam step on a batch; returns per-probe mean loss and correct count (P,)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, logits = self.mean_losses(x, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.optimizer.step()
        correct = (logits.detach().argmax(dim=2) == labels).sum(dim=1)
        return loss.detach(), correct

    def fit_lbfgs(self, x: Tensor, labels: Tensor, iterations: int) -> tuple[Tensor, Tensor]:
        """Minimise every probe's mean cross-entropy over all (P, N, D_max) rows ``x`` at once,
        full batch, by L-BFGS (strong Wolfe line search; the probes' losses are summed, so each
        reaches its own optimum); not in the paper (`LinearProbeConfig.solver`). Returns each
        probe's final mean loss and correct count (P,)."""
        optimizer = torch.optim.LBFGS(
            [self.weight, self.bias],
            lr=1.0,
            max_iter=iterations,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure() -> Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = self.mean_losses(x, labels)[0].sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            loss, logits = self.mean_losses(x, labels)
        return loss, (logits.argmax(dim=2) == labels).sum(dim=1)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """(P, B, D_max) → (P, B) class indices."""
        return self.logits(x).argmax(dim=2)


class _Padder:
    """Cut L layers out of (G, B, D_total) rows and zero-pad them to (G·L, B, D_max)."""

    def __init__(self, slices: Sequence[tuple[int, int]], device: torch.device) -> None:
        width = max(dim for _, dim in slices)
        columns = torch.arange(width)
        self.mask = torch.stack([columns < dim for _, dim in slices]).to(device)  # (L, D_max)
        index = torch.stack([offset + columns.clamp(max=dim - 1) for offset, dim in slices])
        self.index = index.reshape(-1).to(device)  # (L·D_max,)
        self.layers, self.width = len(slices), width

    def __call__(self, rows: Tensor, dtype: torch.dtype) -> Tensor:
        groups, batch, _ = rows.shape
        picked = rows.index_select(2, self.index).to(dtype)
        picked = picked.view(groups, batch, self.layers, self.width) * self.mask.to(dtype)
        return picked.permute(0, 2, 1, 3).reshape(groups * self.layers, batch, self.width)


@dataclass
class ProbeFit:
    """What `fit_cached_probes` returns; probes are ordered group-major: p = g·L + l."""

    test_accuracy: Tensor  # (P,) percent
    history: list[dict[str, Any]]  # per epoch: lr, mean train loss and accuracy of each probe
    bank: ProbeBank


def fit_cached_probes(
    train: Tensor,
    train_labels: Tensor,
    test: Tensor,
    test_labels: Tensor,
    slices: Sequence[tuple[int, int]],
    keys: Sequence[Sequence[int]],
    num_classes: int,
    config: ProbeConfig,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
) -> ProbeFit:
    """Train G·L linear probes on cached features and test them.

    ``train``: (G, K, N, D_total) features of G noise levels in K views (any dtype/device;
    batches are gathered where it lives and moved to ``device``); ``test``: (G, N_test,
    D_total); ``slices``: the L layers' (offset, dim); ``keys``: one integer key per probe, e.g.
    (t, layer), seeding its initialisation — so a probe trained alone or in any group starts,
    and ends, the same. In epoch e, image i uses view v_e(i) ~ U{0..K−1} seeded by (seed, e, i)
    and the batches follow `epoch_permutation(N, seed, e)`; both are shared by all probes.
    """
    device = torch.device(device)
    subset = labelled_subset(train_labels, config.labels_per_class, config.seed)
    if config.labels_per_class is not None:
        train, train_labels = train[:, :, subset.to(train.device)], train_labels[subset]
    if config.standardize:  # per group (noise level): statistics of its training features
        stats = [standardizer(train[g]) for g in range(train.shape[0])]
        mean = torch.stack([m for m, _ in stats])[:, None, None]
        scale = torch.stack([s for _, s in stats])[:, None, None]
        train = (train.float() - mean) * scale
        test = (test.float() - mean[:, 0]) * scale[:, 0]
    groups, views, num_train, _ = train.shape
    padder_src = _Padder(slices, train.device)
    bank = ProbeBank(
        [dim for _ in range(groups) for _, dim in slices],
        num_classes,
        keys,
        config.seed,
        device,
        dtype,
    )
    labels_all = train_labels.to(train.device)
    history = []
    for epoch in range(config.epochs):
        lr = config.lr_at_epoch(epoch)
        order = epoch_permutation(num_train, config.seed, epoch)
        generator = torch.Generator().manual_seed(
            int(item_seeds((config.seed, VIEW_STREAM, epoch), [0])[0])
        )
        chosen_view = torch.randint(views, (num_train,), generator=generator)
        loss_sum = torch.zeros(bank.num_probes, dtype=torch.float64, device=device)
        correct = torch.zeros(bank.num_probes, dtype=torch.int64, device=device)
        starts = range(0, num_train, config.batch_size)
        desc = f"{bank.num_probes} probes, epoch {epoch + 1}/{config.epochs}"
        for start in joblog.progress(starts, desc, enabled=progress):
            index = order[start : start + config.batch_size]
            index_src, view_src = index.to(train.device), chosen_view[index].to(train.device)
            rows = train[:, view_src, index_src]  # (G, B, D_total)
            x = padder_src(rows, dtype).to(device)
            labels = labels_all[index_src].to(device)
            loss, hits = bank.step(x, labels, lr)
            loss_sum += loss.double() * len(index)
            correct += hits
        history.append(
            {
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": (loss_sum / num_train).tolist(),
                "train_accuracy": (100.0 * correct.double() / num_train).tolist(),
            }
        )
    padder_test = _Padder(slices, test.device)
    accuracy = evaluate(bank, test, test_labels, padder_test, dtype, config.batch_size)
    return ProbeFit(accuracy, history, bank)


@torch.no_grad()
def evaluate(
    bank: ProbeBank,
    test: Tensor,
    labels: Tensor,
    padder: _Padder,
    dtype: torch.dtype,
    batch_size: int,
) -> Tensor:
    """Test accuracy (percent) of every probe on (G, N_test, D_total) features."""
    correct = torch.zeros(bank.num_probes, dtype=torch.int64, device=bank.device)
    for start in range(0, test.shape[1], batch_size):
        x = padder(test[:, start : start + batch_size], dtype).to(bank.device)
        y = labels[start : start + batch_size].to(bank.device)
        correct += (bank.predict(x) == y).sum(dim=1)
    return (100.0 * correct.double() / test.shape[1]).cpu()
