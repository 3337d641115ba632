"""The final linear probe with the frozen network in the loop (paper Table 6, for the linear
evaluations of Tables 2–4), at one (layer, t): the official ``linear.py`` (DiT:
``DiT/linear.py``) protocol, `ddae.probing`'s docstring."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ddae.batching import epoch_permutation
from ddae.checkpoints import load_network
from ddae.configs import ConfigError, from_mapping, to_mapping
from ddae.features import iter_features
from ddae.per_item import NOISE_STREAM, TEST, TRAIN
from ddae.probing.bank import ProbeBank, labelled_subset, standardizer
from ddae.result_writers import append_jsonl, write_json
from ddae.settings.probes import LinearProbeConfig
from ddae.sources import Source

log = logging.getLogger(__name__)


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
    with Adam and per-epoch cosine decay (``solver: adam``, Table 6), or (``solver: lbfgs``, not
    in the paper) fitted full-batch by L-BFGS to the E epochs' views at once. The test split is
    un-augmented with deterministic noise (seed, test, 0, i), identical to the cache's test
    features; since the network is frozen its test features are computed once and the accuracy
    is reported after every epoch (``history``; L-BFGS: one entry, after the fit), the final one
    being ``test_accuracy``. Writes and returns test_accuracy, layer, layer_name, t, steps,
    sigma, epochs, history, checkpoint, the source's files, config and created_by (the history
    also to ``metrics_path`` as jsonl).
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
    metrics = Path(metrics_path) if metrics_path else None
    if metrics:
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_text("")

    def train_batches(epoch: int, order: Tensor):
        """(standardised rows, labels) of epoch ``epoch``'s views, batch by batch."""
        desc = f"epoch {epoch + 1}/{cfg.epochs}"
        for index, pooled in features(train_inputs, order, (cfg.seed, TRAIN), epoch, desc):
            x = (pooled[0].float() - mean) * scale if cfg.standardize else pooled[0]
            yield x, train_labels[index.to(device)]

    def record_epoch(entry: dict[str, Any]) -> None:
        test_correct = 0
        for start in range(0, num_test, cfg.batch_size):
            x = test_rows[start : start + cfg.batch_size].unsqueeze(0)
            y = test_labels[start : start + cfg.batch_size].to(device)
            test_correct += int((bank.predict(x)[0] == y).sum())
        history.append({**entry, "test_accuracy": 100.0 * test_correct / num_test})
        if metrics:
            append_jsonl(metrics, history[-1])

    history: list[dict[str, Any]] = []
    if cfg.solver == "lbfgs":  # not in the paper: every epoch's views at once (the config's note)
        batches = [batch for e in range(cfg.epochs) for batch in train_batches(e, subset)]
        x, labels = (torch.cat(part) for part in zip(*batches, strict=True))
        loss, hits = bank.fit_lbfgs(x.unsqueeze(0), labels, cfg.lbfgs_iterations)
        record_epoch(
            {
                "epoch": cfg.epochs,
                "lr": None,
                "train_loss": float(loss[0]),
                "train_accuracy": 100.0 * int(hits[0]) / len(labels),
            }
        )
    for epoch in range(cfg.epochs if cfg.solver == "adam" else 0):  # Table 6
        lr = cfg.lr_at_epoch(epoch)
        loss_sum, correct = 0.0, 0
        for x, labels in train_batches(
            epoch, subset[epoch_permutation(num_train, cfg.seed, epoch)]
        ):
            loss, hits = bank.step(x.unsqueeze(0), labels, lr)
            loss_sum += float(loss[0]) * len(labels)
            correct += int(hits[0])
        record_epoch(
            {
                "epoch": epoch + 1,
                "lr": lr,
                "train_loss": loss_sum / num_train,
                "train_accuracy": 100.0 * correct / num_train,
            }
        )
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
