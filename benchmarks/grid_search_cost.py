"""Cost of the (layer, t) grid search (paper Appendix B): cached + batched vs the official way.

One tiny checkpoint (the smoke test's DDPM UNet at 16 px, untrained, T = 1000), N training and
N_test test digits, the grid t ∈ ``--ts`` × every decoder layer, ``--epochs`` epochs per probe,
all on the CPU. Four ways to obtain the same table of test accuracies:

* ``per-probe``: the official protocol one probe at a time (``linear.py`` without ``--grid``,
  run once per (layer, t)): every epoch re-augments and re-noises the training set and runs the
  full network for every batch; nn.Linear + Adam + CosineAnnealingLR per probe;
* ``official --grid``: ``linear.py --grid``: one full forward pass per (t, batch) serves all
  layers, each probe then updated in a Python loop (``ClassifierDict.train``);
* ``cached K=E``: `ddae.features.cache_features` with K = epochs views per t (the same number of
  distinct augmented/noised images as re-extracting every epoch), then `ddae.probing.grid_search`
  training every probe jointly by batched tensor ops;
* ``cached K=1``: one cached view per t reused in every epoch (fewest forward passes).

Printed: wall time, images through the network (forward passes × batch), and ratios against
per-probe and official --grid. Forward-pass images: per-probe T·L·(E·N + N_test), official --grid
T·(E·N + N_test), cached T·(K·N + N_test). The probes' accuracies are not compared (the runs use
different random streams); this measures cost only. Run from the repository root:

    python benchmarks/grid_search_cost.py            # ~2 minutes on one busy CPU core
    python benchmarks/grid_search_cost.py --train 256 --epochs 5

Measurements, not tests: nothing is asserted.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import yaml
from torch import nn

from ddae.batching import augment_batch, to_model_range
from ddae.checkpoints import load_network, save_checkpoint
from ddae.datasets.digits import load_digits
from ddae.datasets.format import ImageDataset
from ddae.features import DecoderFeatures, cache_features
from ddae.networks import build_network
from ddae.probing.grid_search import grid_search

SMOKE_CONFIG = Path(__file__).resolve().parents[1] / "tests" / "smoke" / "config.yaml"
TINY = yaml.safe_load(SMOKE_CONFIG.read_text())["pretraining"]["digits_ddpm"]["network"]
BATCH = 128  # official: 128 per GPU (one "GPU" here); base lr 1e-3
LR = 1e-3


class Counter:
    def __init__(self) -> None:
        self.images = 0
        self.passes = 0

    def __call__(self, module: nn.Module, args: tuple) -> None:
        self.images += args[0].shape[0]
        self.passes += 1


def official(
    checkpoint: Path, train: ImageDataset, test: ImageDataset, ts, epochs, layers_per_pass
) -> tuple[float, Counter]:
    """linear.py: fresh flip/crop + noise each epoch, full forward per batch (see docstring).

    ``layers_per_pass`` is a list of layer groups; each group gets its own forward passes
    (all layers together = --grid; one layer per group = one probe at a time).
    """
    net, framework, _ = load_network(checkpoint)
    net.requires_grad_(False)
    counter = Counter()
    handle = net.register_forward_pre_hook(counter)
    generator = torch.Generator().manual_seed(0)
    classes = len(train.classes)
    start = time.perf_counter()
    for t in ts:
        sigma = framework.sigma_at_timestep(t, 1000)

        def feats(images, features, sigma=sigma):
            x0 = to_model_range(images)
            x = x0 + sigma * torch.randn(x0.shape, generator=generator)
            sigmas = torch.full((len(x),), sigma, dtype=torch.float64)
            with torch.no_grad():
                return features(*framework.network_inputs(x, sigmas))

        for group in layers_per_pass:
            probes = []
            with DecoderFeatures(net, group, stop_early=False) as features:
                dims = [p.shape[1] for p in feats(train.images[:1], features)]
                counter.images -= 1  # the official code's dry run to size the heads
                counter.passes -= 1
                for dim in dims:
                    head = nn.Linear(dim, classes)
                    optimizer = torch.optim.Adam(head.parameters(), lr=LR)
                    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
                    probes.append((head, optimizer, scheduler))
                for _ in range(epochs):
                    order = torch.randperm(len(train), generator=generator)
                    for begin in range(0, len(train), BATCH):
                        index = order[begin : begin + BATCH]
                        images = augment_batch(
                            train.images[index], hflip=True, crop_padding=4, generator=generator
                        )
                        pooled = feats(images, features)
                        for (head, optimizer, _), x in zip(probes, pooled, strict=True):
                            loss = nn.functional.cross_entropy(head(x), train.labels[index])
                            optimizer.zero_grad()
                            loss.backward()
                            optimizer.step()
                    for _, _, scheduler in probes:
                        scheduler.step()
                for begin in range(0, len(test), BATCH):
                    pooled = feats(test.images[begin : begin + BATCH], features)
                    for (head, _, _), x in zip(probes, pooled, strict=True):
                        with torch.no_grad():
                            head(x).argmax(dim=1)
    handle.remove()
    return time.perf_counter() - start, counter


def cached(checkpoint: Path, data: Path, ts, epochs: int, views: int, work: Path) -> float:
    start = time.perf_counter()
    dirs = []
    for t in ts:
        config = {"views": views, "batch_size": BATCH, "seed": 0}
        out = work / f"K{views}" / f"t{t}"
        cache_features(
            checkpoint, data / "train.npz", data / "test.npz", t, 1000, config, out, "cpu", False
        )
        dirs.append(out)
    probe = {"epochs": epochs, "batch_size": BATCH, "lr": LR}
    grid_search(dirs, probe, work / f"K{views}.csv", work / f"K{views}.json", "cpu", False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=128, help="training images N")
    parser.add_argument("--test", type=int, default=64, help="test images N_test")
    parser.add_argument("--epochs", type=int, default=3, help="epochs E per probe")
    parser.add_argument("--ts", type=int, nargs="+", default=[1, 11, 21], help="official DDPM grid")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        torch.manual_seed(0)
        net = build_network(TINY)
        run = {"network": TINY, "framework": {"kind": "ddpm", "timesteps": 1000}}
        save_checkpoint({"run": run, "ema": net.state_dict()}, work / "ckpt.pt")
        digits = load_digits(TINY["resolution"])
        splits = {}
        for split, count in [("train", args.train), ("test", args.test)]:
            d = digits[split]
            splits[split] = ImageDataset(d.images[:count], d.labels[:count], d.classes)
            splits[split].save(work / f"{split}.npz")
        layers = list(range(1, len(net.decoder_blocks()) + 1))
        T, L, E, N, M = len(args.ts), len(layers), args.epochs, args.train, args.test
        print(f"grid: {T} t x {L} layers = {T * L} probes, {E} epochs, N={N}, N_test={M}, CPU")
        rows = []
        seconds, count = official(
            work / "ckpt.pt", splits["train"], splits["test"], args.ts, E, [[k] for k in layers]
        )
        rows.append(("per-probe (official, 1 probe/run)", seconds, count.images))
        seconds, count = official(
            work / "ckpt.pt", splits["train"], splits["test"], args.ts, E, [layers]
        )
        rows.append(("official linear.py --grid", seconds, count.images))
        for views in (E, 1):
            seconds = cached(work / "ckpt.pt", work, args.ts, E, views, work)
            rows.append((f"cached K={views} + batched probes", seconds, T * (views * N + M)))
    base, grid = rows[0], rows[1]
    print(f"{'method':<36} {'wall s':>8} {'fwd images':>11} {'x faster':>9} {'vs --grid':>9}")
    for name, seconds, images in rows:
        print(
            f"{name:<36} {seconds:>8.1f} {images:>11d} {base[1] / seconds:>9.2f} "
            f"{grid[1] / seconds:>9.2f}"
        )


if __name__ == "__main__":
    main()
