"""Linear probing of DDAE features: the (layer, t) grid search and the final linear probe.

Paper Sec. 3.2 / Figure 2 / Appendix B: a linear classifier is trained on the frozen, pooled
output of one decoder block at one noise level; the grid over (layer, t) picks the pair used for
linear evaluation (Tables 2–4) and fine-tuning (Table 9 lists the choices).

Protocol facts from the official code (github.com/FutureXiang/ddae), followed here:

* Head: a plain ``nn.Linear(D, num_classes)`` on the un-normalised pooled features — no
  BatchNorm, no LayerNorm (``linear.py`` ``ClassifierDict``; ``DiT/linear.py`` ``Classifier``
  has its LayerNorm commented out). Initialisation is ``nn.Linear``'s: weight and bias
  U(−1/√D, 1/√D).
* Optimiser: ``torch.optim.Adam(lr=base_lr)``, no weight decay, cross-entropy loss; the config's
  ``linear.lrate`` = 1e-3 at ``batch_size`` 128 *per GPU*, and ``linear.py`` multiplies the lr by
  the number of GPUs (``base_lr *= DDP_multiplier``). Table 6: 4 GPUs, i.e. a global batch of
  512 at lr 4e-3. Here (`ddae.learning_rate`) lr · batch_size / lr_reference_batch with ``lr``
  1e-3 at ``lr_reference_batch`` 128 (the same rule for any global batch).
* Schedule: ``CosineAnnealingLR(optimizer, T_max=epochs)`` stepped once per *epoch*:
  lr_e = peak · (1 + cos(π e / E)) / 2 for e = 0..E−1 (η_min = 0; the last epoch is not at 0).
* Data: ``RandomHorizontalFlip()`` + ``RandomCrop(32, 4)`` on the training split, fresh noise
  (``torch.randn_like``) in every batch, test split un-augmented; accuracy measured once after
  the last epoch. The last partial batch is kept (DataLoader default ``drop_last=False``).
* Grid (``linear.py --grid``): all (t, block) probes are trained side by side on the same
  batches, one feature pass per t and batch serving every block. Appendix B: 10 epochs per probe.
* Epochs of the final probe (Table 6): CIFAR-10 DDPM 10 / EDM 15 / DiT 30; Tiny-ImageNet DDPM 20 /
  EDM 30 / DiT 30 (the official configs/DDPM_ddpm.yaml says 15 for CIFAR-10 DDPM).

What differs, and why:

* `grid_search` trains on features cached by `ddae.features` (K augmented views, each image
  using one randomly chosen view per epoch, like the official DiT ``LatentCodeDataset``), not
  on features recomputed every epoch; every (layer, t) probe of a checkpoint is trained jointly
  by batched tensor ops (`ProbeBank`), bit-for-bit independent in its math of the others.
* All randomness is seeded (per-image noise and augmentation, see `ddae.features`; batch order
  from `ddae.batching.epoch_permutation`; per-probe initialisation from (seed, t, layer)).

Two options the paper does not use, both off by default, for the CPU miniature (tests/smoke):

* ``standardize``: each feature column is standardised with the mean and variance of the
  probe's training features, (x − μ)/√(σ² + 1e-5) — a BatchNorm1d without affine parameters in
  evaluation mode, the normalisation MAE-style linear probes put before the head. The paper
  uses none ("we do not use additional normalization layers before linear classifiers since we
  find it also works well", Appendix A); on features of small spread, as a briefly
  trained tiny network has, an un-normalised probe does not converge in a few epochs.
* ``labels_per_class``: the probe sees only k labelled training images per class (a seeded
  choice, the same for every probe of a config): with few labels the quality of the
  representation shows, where with all labels even raw digit pixels are linearly separable.
* `pixel_probe`: the same probe protocol on raw pixels (a reference point, like the paper's
  supervised baseline, for the miniature's findings in `ddae.findings`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ddae import joblog
from ddae.batching import epoch_permutation
from ddae.checkpoints import load_network
from ddae.configs import ConfigError, from_mapping, to_mapping
from ddae.datasets.format import ImageDataset
from ddae.features import FeatureCache, feature_bytes, iter_features, load_feature_cache
from ddae.per_item import NOISE_STREAM, TEST, TRAIN, VIEW_STREAM, item_seeds
from ddae.result_files import read_grid_choice
from ddae.result_writers import append_jsonl, write_csv, write_json
from ddae.settings.probes import GridSearchConfig, LinearProbeConfig, ProbeConfig
from ddae.sources import Source

log = logging.getLogger(__name__)
INIT_STREAM = 3  # seeds each probe's initialisation
SUBSET_STREAM = 4  # seeds the choice of the labels_per_class subset
BATCHNORM_EPS = 1e-5  # torch.nn.BatchNorm1d's default eps (``standardize``)
GRID_CSV_COLUMNS = ["layer", "layer_name", "t", "steps", "sigma", "test_accuracy"]
TIE_BREAK = "highest test_accuracy; ties broken by lowest t, then lowest layer"


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


# ---------------------------------------------------------------------------------------------
# Many linear probes trained jointly.
# ---------------------------------------------------------------------------------------------


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

    def step(self, x: Tensor, labels: Tensor, lr: float) -> tuple[Tensor, Tensor]:
        """One Adam step on a batch; returns per-probe mean loss and correct count (P,)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        logits = self.logits(x)
        probes, batch, classes = logits.shape
        losses = F.cross_entropy(
            logits.reshape(probes * batch, classes), labels.repeat(probes), reduction="none"
        ).view(probes, batch)
        loss = losses.mean(dim=1)  # (P,) each probe's own mean over its batch
        self.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.optimizer.step()
        correct = (logits.detach().argmax(dim=2) == labels).sum(dim=1)
        return loss.detach(), correct

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


# ---------------------------------------------------------------------------------------------
# Grid search over cached (layer, t) features (Appendix B, Figure 2).
# ---------------------------------------------------------------------------------------------


def _check_consistent(caches: Sequence[FeatureCache]) -> None:
    first = caches[0]
    for cache in caches[1:]:
        for key in ("layers", "steps", "views", "checkpoint", "num_classes"):
            if cache.meta[key] != first.meta[key]:
                raise ConfigError(
                    f"{cache.path}: {key} differs from {first.path} "
                    f"({cache.meta[key]!r} vs {first.meta[key]!r})"
                )
        if not (
            np.array_equal(cache.train_labels, first.train_labels)
            and np.array_equal(cache.test_labels, first.test_labels)
        ):
            raise ConfigError(f"{cache.path}: labels differ from {first.path}")
    ts = [cache.meta["t"] for cache in caches]
    if len(set(ts)) != len(ts):
        raise ConfigError(f"feature directories repeat a timestep: {sorted(ts)}")


def _groups(caches: Sequence[FeatureCache], budget_bytes: float) -> list[list[FeatureCache]]:
    groups: list[list[FeatureCache]] = [[]]
    used = 0
    for cache in caches:
        size = feature_bytes(cache)
        if groups[-1] and used + size > budget_bytes:
            groups.append([])
            used = 0
        groups[-1].append(cache)
        used += size
    return groups


def _stack(arrays: Sequence[np.ndarray], device: torch.device) -> Tensor:
    """Copy memory-mapped float16 arrays into one (G, ...) tensor on ``device``."""
    out = torch.empty((len(arrays), *arrays[0].shape), dtype=torch.float16, device=device)
    for g, array in enumerate(arrays):
        for k in range(array.shape[0] if array.ndim == 3 else 1):  # one view at a time
            part = array[k] if array.ndim == 3 else array
            target = out[g, k] if array.ndim == 3 else out[g]
            target.copy_(torch.from_numpy(np.array(part, dtype=np.float16)))
    return out


def grid_search(
    feature_dirs: Sequence[str | Path],
    config: Mapping[str, Any],
    out_csv: str | Path,
    out_json: str | Path,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Linear-probe every (layer, t) of one checkpoint's cached features (Appendix B).

    Writes ``out_csv`` (columns layer, layer_name, t, steps, sigma, test_accuracy; sorted by t,
    then layer) and ``out_json`` (the best row plus checkpoint, config, created_by; best = highest
    test accuracy, ties broken by lowest t then lowest layer). Returns the JSON record. The
    pipeline runs it one t at a time (`ddae.grid_timesteps`), which gives the same files.
    """
    cfg = from_mapping(GridSearchConfig, config, "probe")
    if not feature_dirs:
        raise ConfigError("grid_search needs at least one feature directory")
    caches = sorted((load_feature_cache(d) for d in feature_dirs), key=lambda c: c.meta["t"])
    _check_consistent(caches)
    rows = probe_feature_caches(caches, cfg, device, progress)
    return write_grid(
        rows,
        cfg,
        feature_dirs=[str(c.path) for c in caches],
        checkpoint=caches[0].meta["checkpoint"],
        features_config=caches[0].meta.get("config"),
        out_csv=out_csv,
        out_json=out_json,
    )


def probe_feature_caches(
    caches: Sequence[FeatureCache],
    cfg: GridSearchConfig,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """The grid CSV rows of every (layer, t) probe of consistent ``caches`` (one per t), trained
    in groups of t that fit ``cfg.resident_gib``; a probe's result does not depend on which
    other t share its group (`fit_cached_probes`: seeds keyed by (t, layer), shared batches)."""
    device = torch.device(device)
    layers = caches[0].layers
    slices = [(layer["offset"], layer["dim"]) for layer in layers]
    train_labels = torch.from_numpy(np.asarray(caches[0].train_labels))
    test_labels = torch.from_numpy(np.asarray(caches[0].test_labels))
    rows = []
    for group in _groups(caches, cfg.resident_gib * 2**30):
        fit = fit_cached_probes(
            _stack([c.train for c in group], device),
            train_labels,
            _stack([c.test for c in group], device),
            test_labels,
            slices,
            [(c.meta["t"], layer["index"]) for c in group for layer in layers],
            caches[0].meta["num_classes"],
            cfg,
            device,
            progress=progress,
        )
        accuracy = iter(fit.test_accuracy.tolist())
        for cache in group:
            for layer in layers:
                rows.append(
                    {
                        "layer": layer["index"],
                        "layer_name": layer["name"],
                        "t": cache.meta["t"],
                        "steps": cache.meta["steps"],
                        "sigma": cache.meta["sigma"],
                        "test_accuracy": next(accuracy),
                    }
                )
    return rows


def write_grid(
    rows: Sequence[Mapping[str, Any]],
    cfg: GridSearchConfig,
    *,
    feature_dirs: Sequence[str],
    checkpoint: str,
    features_config: Mapping[str, Any] | None,
    out_csv: str | Path,
    out_json: str | Path,
) -> dict[str, Any]:
    """Write the grid CSV (rows sorted by t, then layer) and the choice JSON (the best row by
    `TIE_BREAK` plus provenance); returns the JSON record."""
    rows = sorted(rows, key=lambda row: (row["t"], row["layer"]))
    best = min(rows, key=lambda row: (-row["test_accuracy"], row["t"], row["layer"]))
    record = {
        **best,
        "tie_break": TIE_BREAK,
        "probes": len(rows),
        "epochs": cfg.epochs,
        "feature_dirs": list(feature_dirs),
        "checkpoint": checkpoint,
        "config": to_mapping(cfg),
        "features_config": features_config,
        "created_by": "ddae.probing.grid_search",
    }
    write_csv(out_csv, GRID_CSV_COLUMNS, rows)
    write_json(out_json, record)
    log.info(
        "grid search of %d probes: best layer %d (%s), t = %d/%d, test accuracy %.2f%% (%s)",
        len(rows),
        best["layer"],
        best["layer_name"],
        best["t"],
        best["steps"],
        best["test_accuracy"],
        out_csv,
    )
    return record


def pixel_probe(
    train_path: str | Path,
    test_path: str | Path,
    config: Mapping[str, Any],
    out_json: str | Path,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """A linear probe on raw pixels (x in [−1, 1], flattened) with a grid probe's protocol.

    The miniature's reference point beside DDAE features (`ddae.findings`): the same
    `fit_cached_probes` (optimiser, schedule, ``standardize``, ``labels_per_class``, seed) as
    `grid_search` with the same config, on one un-augmented view of the images.
    """
    cfg = from_mapping(GridSearchConfig, config, "probe")
    train, test = ImageDataset.load(train_path), ImageDataset.load(test_path)

    def pixels(images: Tensor) -> Tensor:
        return (images.float() / 127.5 - 1.0).flatten(1)

    train_rows, test_rows = pixels(train.images), pixels(test.images)
    dim = train_rows.shape[1]
    fit = fit_cached_probes(
        train_rows[None, None],
        train.labels,
        test_rows[None],
        test.labels,
        [(0, dim)],
        [(0, 0)],
        len(train.classes),
        cfg,
        device,
    )
    record = {
        "test_accuracy": float(fit.test_accuracy[0]),
        "features": f"raw pixels ({'x'.join(map(str, train.images.shape[1:]))}, in [-1, 1])",
        "train": str(train_path),
        "test": str(test_path),
        "num_classes": len(train.classes),
        "labelled_train_images": len(labelled_subset(train.labels, cfg.labels_per_class, cfg.seed)),
        "config": to_mapping(cfg),
        "checkpoint": None,  # raw pixels: no diffusion checkpoint
        "created_by": "ddae.probing.pixel_probe",
    }
    write_json(out_json, record)
    log.info(
        "linear probe on raw pixels (%s, %d labelled images): test accuracy %.2f%% (%s)",
        record["features"],
        record["labelled_train_images"],
        record["test_accuracy"],
        out_json,
    )
    return record


# ---------------------------------------------------------------------------------------------
# The final linear probe with the frozen network in the loop (Table 6, Tables 2–4).
# ---------------------------------------------------------------------------------------------


def linear_probe(
    checkpoint: str | Path,
    source: Source,
    layer: int,
    t: int,
    steps: int,
    config: Mapping[str, Any],
    out_json: str | Path,
    metrics_path: str | Path | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """The official linear-probe protocol at one (layer, t) (Table 6; DiT: ``DiT/linear.py``).

    Frozen EMA network in the loop: every epoch e each training item gets fresh inputs from the
    ``source`` (`ddae.sources.Source.train_epochs`: images flipped and cropped afresh, seeded
    per image by (seed, train, view = e), so epoch e sees exactly view e of a `ddae.features`
    cache with the same seed; latents: one randomly chosen cached version, whose augmentation
    is baked in, so ``hflip``/``crop_padding`` are unused) and fresh noise seeded by (seed,
    train, e, i); the network runs only up to the chosen block, and one linear head is trained
    with Adam and per-epoch cosine decay. The test split is un-augmented with deterministic noise
    (seed, test, 0, i), identical to the cache's test features; since the network is frozen its
    test features are computed once and the accuracy is reported after every epoch
    (``history``), the final one being ``test_accuracy``. Writes and returns test_accuracy,
    layer, layer_name, t, steps, sigma, epochs, history, checkpoint, the source's files, config
    and created_by (the history also to ``metrics_path`` as jsonl).
    """
    cfg = from_mapping(LinearProbeConfig, config, "probe")
    device = torch.device(device)
    net, framework, run = load_network(checkpoint, "ema", map_location=device, frozen=True)
    source.check_network(run["network"], str(checkpoint))
    _check_layer(net, layer)
    train_inputs, test_inputs = source.train_epochs(cfg, device), source.test_inputs(device)
    train_labels, test_labels = source.train_labels, source.test_labels
    sigma = framework.sigma_at_timestep(t, steps)
    subset = labelled_subset(train_labels, cfg.labels_per_class, cfg.seed)
    num_train, num_test = len(subset), len(test_labels)
    fast = cfg.fast_path(device)  # the config's switches that act on this device
    common = {
        "framework": framework,
        "net": net,
        "sigma": sigma,
        "batch_size": cfg.batch_size,
        "device": device,
        "fast": fast,
        "layers": [layer],
    }

    def features(inputs, indices: Tensor, key: tuple[int, ...], view: int, desc: str):
        return iter_features(
            inputs_for=inputs,
            indices=indices,
            noise_key=(*key, view, NOISE_STREAM),
            view=view,
            progress=progress,
            desc=desc,
            **common,
        )

    test_rows = torch.cat(
        [
            pooled[0]
            for _, pooled in features(
                test_inputs, torch.arange(num_test), (cfg.seed, TEST), 0, "test features"
            )
        ]
    )
    dim = test_rows.shape[1]
    mean, scale = torch.zeros(dim, device=device), torch.ones(dim, device=device)
    if cfg.standardize:  # statistics of the training images' features in their first view
        rows = [p[0] for _, p in features(train_inputs, subset, (cfg.seed, TRAIN), 0, "stats")]
        mean, scale = standardizer(torch.cat(rows))
        test_rows = (test_rows.float() - mean) * scale
    bank = ProbeBank([dim], source.num_classes, [(t, layer)], cfg.seed, device)
    train_labels = train_labels.to(device)
    history = []
    metrics = Path(metrics_path) if metrics_path else None
    if metrics:
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_text("")
    for epoch in range(cfg.epochs):
        lr = cfg.lr_at_epoch(epoch)
        order = subset[epoch_permutation(num_train, cfg.seed, epoch)]
        loss_sum, correct = 0.0, 0
        desc = f"epoch {epoch + 1}/{cfg.epochs}"
        for index, pooled in features(train_inputs, order, (cfg.seed, TRAIN), epoch, desc):
            x = (pooled[0].float() - mean) * scale if cfg.standardize else pooled[0]
            loss, hits = bank.step(x.unsqueeze(0), train_labels[index.to(device)], lr)
            loss_sum += float(loss[0]) * len(index)
            correct += int(hits[0])
        test_correct = 0
        for start in range(0, num_test, cfg.batch_size):
            x = test_rows[start : start + cfg.batch_size].unsqueeze(0)
            y = test_labels[start : start + cfg.batch_size].to(device)
            test_correct += int((bank.predict(x)[0] == y).sum())
        entry = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": loss_sum / num_train,
            "train_accuracy": 100.0 * correct / num_train,
            "test_accuracy": 100.0 * test_correct / num_test,
        }
        history.append(entry)
        if metrics:
            append_jsonl(metrics, entry)
    log.info(
        "linear probe at layer %d (%s), t = %d/%d: test accuracy %.2f%% after %d epochs",
        layer,
        net.decoder_blocks()[layer - 1][0],
        t,
        steps,
        history[-1]["test_accuracy"],
        cfg.epochs,
    )
    record = {
        "test_accuracy": history[-1]["test_accuracy"],
        "layer": layer,
        "layer_name": net.decoder_blocks()[layer - 1][0],
        "t": t,
        "steps": steps,
        "sigma": sigma,
        "epochs": cfg.epochs,
        "history": history,
        "checkpoint": str(checkpoint),
        **source.record(),
        "config": to_mapping(cfg),
        "ran_with": fast.record(device),
        "created_by": "ddae.probing.linear_probe",
    }
    write_json(out_json, record)
    return record


def _check_layer(net: torch.nn.Module, layer: int) -> None:
    blocks = net.decoder_blocks()
    if not 1 <= layer <= len(blocks):
        raise ConfigError(f"layer {layer} is not within 1..{len(blocks)}")


def resolve_layer_t(
    choice: Sequence[str | Path], layer_t: Mapping[str, Any] | None, steps: int | None
) -> tuple[int, int, int]:
    """(layer, t, steps) from a `grid_search` JSON (``choice``, one file) or the config's fixed
    ``layer_t`` {layer, t} (e.g. Table 9); a grid's steps must match ``steps`` when given."""
    if choice:
        if len(choice) != 1:
            raise ConfigError(f"expected one grid-search choice file, got {list(choice)}")
        record = read_grid_choice(choice)  # validated: names the file and the bad key
        layer, t, grid_steps = record["layer"], record["t"], record["steps"]
        if steps is not None and grid_steps != int(steps):
            raise ConfigError(
                f"{choice[0]}: grid search used steps={grid_steps}, config says {steps}"
            )
        return layer, t, grid_steps
    if not isinstance(layer_t, Mapping) or set(layer_t) != {"layer", "t"}:
        raise ConfigError(f"layer_t: expected {{layer, t}} when there is no grid, got {layer_t!r}")
    if steps is None:
        raise ConfigError("steps: required when layer_t is given")
    return int(layer_t["layer"]), int(layer_t["t"]), int(steps)
