"""Upper bounds of every size in config.yaml, checked before anything is built or planned.

The schema gives each size a minimum only, so a slip of the keyboard (``steps: 1000000000``)
used to pass ``snakemake -n`` and fail later: EDM's 10⁹-level Heun schedule allocates 8 GB in the
job, and 10⁶ grid timesteps make Snakemake itself run out of memory while it plans (issue 23,
item 5). Every size key therefore has a bound: `BOUND_FACTOR` times the largest value the paper
uses for it (paper Sec. 4, Appendix A-B, Tables 5-8), cited in `BOUNDS`. Bounds are generous:
they refuse typos, not a user's larger experiment (a real need for more is one edit here).

Besides the keys themselves, three counts that size the DAG are bounded, computed without
building anything: checkpoints per run, grid timesteps per run (``(stop - start) // every + 1``)
and pretraining jobs per run with ``segment_epochs``.

`check_config_sizes` runs first in `ddae.paper_shape.check_paper_shape`, before any other check
computes with these values; errors are `ddae.configs.ConfigError` carrying the key path, so that
`ddae.config_messages.config_mistakes_reported` names the key, its line in config.yaml and the
YAML anchor it belongs to. Pure Python, no torch (the Snakefile imports it on every parse).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ddae.configs import ConfigError, Key, dotted_key

BOUND_FACTOR = 10  # each size may be this many times the paper's largest value for it


@dataclass(frozen=True)
class Bound:
    """Keys matching ``pattern`` (dot-separated; ``*`` one key or list index, ``**`` any number
    of them) may be at most ``BOUND_FACTOR * paper``; ``source`` says where ``paper`` is from."""

    pattern: str
    paper: float
    source: str

    @property
    def limit(self) -> float:
        return BOUND_FACTOR * self.paper


# The first pattern that matches a key gives its bound. Paper values: Table 5 (networks,
# pre-training), Tables 6-8 (probes, fine-tuning, supervised), App. A-B, Figures 3-4.
BOUNDS = (
    # images and networks
    Bound("datasets.*.resolution", 256, "256 px images into DiT's VAE, App. A"),
    Bound("**.network.resolution", 256, "256 px images into DiT's VAE, App. A"),
    Bound("**.latents.image_size", 256, "256 px images into DiT's VAE, App. A"),
    Bound("**.base_channels", 128, "Table 5: 128 channels"),
    Bound("**.model_channels", 128, "Table 5: 128 channels"),
    Bound("**.channel_mult.*", 2, "Table 5: channel multipliers up to 2"),
    Bound("**.num_blocks", 4, "Table 5: DDPM++'s 4 blocks per resolution"),
    Bound("**.channel_mult_emb", 4, "EDM's DDPM++: 4"),
    Bound("**.augment_dim", 9, "EDM's 9 augmentation labels"),
    Bound("**.in_channels", 4, "DiT's 4 latent channels"),
    Bound("**.out_channels", 4, "DiT's 4 latent channels"),
    Bound("**.input_size", 32, "DiT-XL/2-256's 32x32 latents"),
    Bound("**.patch_size", 2, "DiT-XL/2's patch 2"),
    Bound("**.hidden_size", 1152, "DiT-XL's width 1152"),
    Bound("**.depth", 28, "DiT-XL's 28 blocks, WideResNet-28"),
    Bound("**.num_heads", 16, "DiT-XL's 16 heads"),
    Bound("**.mlp_ratio", 4, "DiT's MLP ratio 4"),
    Bound("**.num_classes", 1000, "DiT's 1000 ImageNet classes"),
    Bound("**.widen_factor", 10, "WideResNet-28-10, Table 8"),
    Bound("**.fourier_size", 128, "the noise-conditional WRN's 128 Fourier features, Fig. 6"),
    Bound("**.embedding_dim", 512, "the noise-conditional WRN's 512-d embedding, Fig. 6"),
    # diffusion levels and samplers
    Bound("**.timesteps", 1000, "T = 1000, Fig. 4"),
    Bound("pretraining.*.evaluation.steps", 1000, "t out of T = 1000, Table 9"),
    Bound("pretraining.*.evaluation.fid.steps", 1000, "DDPM ancestral sampling's T = 1000"),
    Bound("pretraining.*.evaluation.fid.samples", 50_000, "50k FID samples, Sec. 3.2"),
    Bound("**.test_levels", 20, "the authors' 20 noise levels, Fig. 6"),
    # data and training sizes
    Bound("pretraining.*.epochs.*", 4000, "Table 5: CIFAR-10 EDM's 4000 epochs"),
    Bound("pretraining.*.training.warmup_epochs", 200, "EDM's 200 warm-up epochs"),
    Bound("**.epochs", 200, "Table 8: 200 epochs"),
    Bound("**.warmup_epochs", 200, "Table 8: 200 epochs"),
    Bound("**.batch_size", 512, "a global batch of 512, Tables 5-8"),
    Bound("**.eval_batch_size", 512, "a global batch of 512, Tables 5-8"),
    Bound("**.lr_reference_batch", 512, "a global batch of 512, Tables 5-8"),
    Bound("**.views", 10, "10 augmented views, App. A"),
    Bound("**.crop_padding", 4, "RandomCrop(32, padding=4), Table 6"),
    Bound("**.labels_per_class", 5000, "CIFAR-10's 5000 training images per class"),
    # not in the paper (LinearProbeConfig.solver lbfgs): its default of 100 iterations
    Bound("**.lbfgs_iterations", 100, "the default of the L-BFGS probe, not in the paper"),
    # not in the paper (NoisyHeadConfig.standardize): at most a training set's images
    Bound("**.standardize_images", 50_000, "CIFAR-10's 50,000 training images, not in the paper"),
    Bound("**.align_uniform.images", 10_000, "10,000 images, Fig. 3"),
    Bound("**.gpus", 8, "8 GPUs, Table 7 (DiT)"),
    Bound("**.training_gpus", 8, "8 GPUs, Table 7 (DiT)"),
)

# Counts of DAG jobs, bounded the same way
CHECKPOINTS_PER_RUN = Bound("pretraining.*.epochs", 6, "Fig. 4's 6 checkpoints per run")
GRID_TIMESTEPS = Bound("pretraining.*.evaluation.grid_t", 50, "App. B: all 50 EDM levels")
# Not in the paper (it has no segments): 4000 epochs (Table 5) in 40-epoch jobs
PRETRAINING_JOBS = Bound("pretraining.*.segment_epochs", 100, "Table 5's 4000 epochs in 40s")
COUNT_BOUNDS = (CHECKPOINTS_PER_RUN, GRID_TIMESTEPS, PRETRAINING_JOBS)


def _matches(pattern: Sequence[str], path: Sequence[Key]) -> bool:
    if not pattern:
        return not path
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_matches(rest, path[i:]) for i in range(len(path) + 1))
    return bool(path) and head in ("*", str(path[0])) and _matches(rest, path[1:])


def _leaves(node: Any, path: tuple[Key, ...] = ()) -> Iterator[tuple[tuple[Key, ...], Any]]:
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _leaves(value, (*path, index))
    else:
        yield path, node


def _bounds_by_last_key() -> tuple[dict[str, tuple[Bound, ...]], tuple[Bound, ...]]:
    """({last key: the bounds that may match a path ending in it}, the bounds that may match
    any other path), each in `BOUNDS` order: a pattern's last part is that key or a wildcard."""
    last = [bound.pattern.rsplit(".", 1)[-1] for bound in BOUNDS]
    wildcards = ("*", "**")
    anywhere = tuple(b for b, part in zip(BOUNDS, last, strict=True) if part in wildcards)
    named = {
        key: tuple(b for b, part in zip(BOUNDS, last, strict=True) if part in (key, *wildcards))
        for key in set(last) - set(wildcards)
    }
    return named, anywhere


# A config has hundreds of leaves, checked on every Snakemake parse: each is matched against the
# few patterns that can end in its key, not against all of BOUNDS
_BOUNDS_BY_LAST_KEY, _BOUNDS_FOR_ANY_KEY = _bounds_by_last_key()


def bound_of(path: Sequence[Key]) -> Bound | None:
    """The bound of the key at ``path`` (None: not a size): the first of `BOUNDS` whose pattern
    matches it."""
    last = str(path[-1]) if path else None
    candidates = _BOUNDS_BY_LAST_KEY.get(last, _BOUNDS_FOR_ANY_KEY)
    return next((b for b in candidates if _matches(b.pattern.split("."), path)), None)


def _check(value: float, bound: Bound, path: tuple[Key, ...], what: str = "") -> None:
    if value > bound.limit:
        raise ConfigError(
            f"{dotted_key(path)}: {what}{value} is above the bound {bound.limit:g} "
            f"({BOUND_FACTOR} x the paper's largest: {bound.source}; ddae.config_bounds)",
            key=path,
        )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_run_counts(name: str, run: Mapping[str, Any]) -> None:
    """A run's checkpoints, grid timesteps and pretraining jobs, counted without building them."""
    where = ("pretraining", name)
    epochs = run.get("epochs")
    if isinstance(epochs, list):
        _check(len(epochs), CHECKPOINTS_PER_RUN, (*where, "epochs"), "a list of ")
    every = run.get("segment_epochs")
    if isinstance(epochs, list) and epochs and _is_number(epochs[-1]) and _is_number(every):
        jobs = math.ceil(epochs[-1] / max(every, 1))
        what = f"{epochs[-1]} epochs in jobs of {every} make "
        _check(jobs, PRETRAINING_JOBS, (*where, "segment_epochs"), what)
    grid = (run.get("evaluation") or {}).get("grid_t")
    if isinstance(grid, Mapping) and all(_is_number(grid.get(k)) for k in grid):
        start, stop, every = (grid.get(k) for k in ("start", "stop", "every"))
        if None not in (start, stop, every) and every >= 1 and stop >= start:
            count = (stop - start) // every + 1
            _check(count, GRID_TIMESTEPS, (*where, "evaluation", "grid_t"), "a grid of ")


# The sections whose values size jobs (tables and findings hold labels and the paper's numbers)
SIZED_SECTIONS = ("datasets", "pretraining", "supervised", "fid")


def check_config_sizes(config: Mapping[str, Any]) -> None:
    """Every size of a pipeline config within its bound; raise `ConfigError` naming the key."""
    sized = {key: config[key] for key in SIZED_SECTIONS if key in config}
    for path, value in _leaves(sized):
        bound = bound_of(path) if _is_number(value) else None
        if bound is not None:
            _check(value, bound, path)
    for name, run in (config.get("pretraining") or {}).items():
        if isinstance(run, Mapping):
            check_run_counts(name, run)
