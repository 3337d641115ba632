"""The stage registry (issue 21): every stage of the pipeline declared once, DiT style.

A `Stage` is one config block of a run's ``evaluation`` (paper Sec. 3-4: FID, the (layer, t)
grid search of Appendix B, the linear probe of Table 6, fine-tuning and scratch of Tables 7-8,
alignment/uniformity of Figure 3, the noise-conditional head of Figure 6, and the settings
blocks ``features`` and ``latents`` that other stages' jobs read) or a supervised baseline. It
names the dataclass its job builds from that block, the result files it writes (path pattern,
scope, format, the contract kind of `ddae.pipeline.result_kinds` and the provenance a file
there records), the rule's params keyword that carries the block, and how the paper-shape
miniature shrinks it (`ddae.paper_shape`). Everything else follows from `STAGES`:

* the rules' outputs and the targets (`stage_output`, `ddae.pipeline.layout`),
* the config checks (`STAGE_CONFIGS`: `ddae.config_checks` validates each block with its class),
* the schema's stage sections (`ddae.pipeline.schema` generates them from the classes),
* the miniature (`Miniature.shrink`),
* a stage with a ``runner`` ("module:function") gets its rule without a rule file: one generic
  per-checkpoint rule per such stage (workflow/rules/evaluate.smk, workflow/scripts/stage.py).

Adding an evaluation stage is therefore its module (config class and runner), a `register`
call and its result's contract kind. Imports no torch: the Snakefile imports this on every
parse, cluster jobs included.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from ddae.settings.alignment import AlignUniformConfig
from ddae.settings.caches import FeatureCacheConfig, LatentCacheConfig
from ddae.settings.classifiers import ClassifierTrainingConfig
from ddae.settings.noisy_heads import NoisyHeadConfig
from ddae.settings.probes import GridSearchConfig, LinearProbeConfig
from ddae.settings.sampling import SamplingConfig

# checkpoint: one file per evaluated checkpoint; final: of the run's final checkpoint; dataset:
# one per dataset (the supervised baselines); None: a settings block without a file of its own.
Scope = Literal["checkpoint", "final", "dataset"]


@dataclass(frozen=True)
class ResultFile:
    """One result file: its path under ``results/{dataset}/``, the contract kind it must keep
    (`ddae.pipeline.result_kinds`), the ``created_by`` values of its writers (empty: a CSV,
    which records none) and whether it records the checkpoint of its path's run and epoch."""

    pattern: str
    contract: str
    writers: tuple[str, ...] = ()
    of_checkpoint: bool = False

    @property
    def format(self) -> str:
        return self.pattern.rsplit(".", 1)[1]

    @property
    def path(self) -> str:
        """The Snakemake wildcard pattern of the file."""
        return f"results/{{dataset}}/{self.pattern}"


@dataclass(frozen=True)
class Miniature:
    """How the paper-shape miniature shrinks a stage's block: keys set to a value, keys capped
    at a value, and for a classifier one epoch without warm-up (`ddae.paper_shape`)."""

    values: Mapping[str, Any] = field(default_factory=dict)
    caps: Mapping[str, int] = field(default_factory=dict)
    one_epoch: bool = False

    def shrink(self, block: Mapping[str, Any]) -> dict[str, Any]:
        block = {**block, **self.values}
        for key, cap in self.caps.items():
            block[key] = min(block[key], cap)
        if self.one_epoch:
            block["epochs"] = 1
            if "warmup_epochs" in block:
                block["warmup_epochs"] = 0
        return block


@dataclass(frozen=True)
class Stage:
    """One stage (module docstring). ``results``: name -> file, the first being the stage's
    result (tables, figures, targets); ``param``: the params keyword of its rule that carries
    its config block; ``runner``: "module:function" of a stage run by the generic rule."""

    name: str
    description: str
    config: type | None = None
    scope: Scope | None = None
    results: Mapping[str, ResultFile] = field(default_factory=dict)
    param: str | None = None
    miniature: Miniature = Miniature()
    runner: str | None = None

    @property
    def result(self) -> ResultFile:
        if not self.results:
            raise ValueError(f"stage {self.name!r} writes no result file of its own")
        return next(iter(self.results.values()))


STAGES: dict[str, Stage] = {}


def register(stage: Stage) -> Stage:
    """Add a stage; its name is its key in a run's ``evaluation`` block. A stage with a runner
    gets the generic rule: its block comes as params ``config`` unless it names another
    keyword, and its result records the runner as ``created_by``."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", stage.name):
        raise ValueError(f"stage name {stage.name!r}: use lower-case letters, digits and _")
    if stage.name in STAGES:
        raise ValueError(f"stage {stage.name!r} is registered twice")
    if stage.runner is not None:
        if stage.scope != "checkpoint" or not re.fullmatch(r"[\w.]+:\w+", stage.runner):
            raise ValueError(
                f"stage {stage.name!r}: a runner is a per-checkpoint stage's 'module:function', "
                f"got {stage.runner!r} with scope {stage.scope!r}"
            )
        result = replace(stage.result, writers=stage.result.writers or (stage.runner,))
        results = {**stage.results, next(iter(stage.results)): result}
        stage = replace(stage, results=results, param=stage.param or "config")
    STAGES[stage.name] = stage
    return stage


def runner_stages() -> list[Stage]:
    """The stages run by the generic rule (workflow/rules/evaluate.smk, ddae.stage_runner)."""
    return [stage for stage in STAGES.values() if stage.runner is not None]


def evaluation_stages() -> dict[str, Stage]:
    """The stages configured in a run's ``evaluation`` block (all but the baselines)."""
    return {name: stage for name, stage in STAGES.items() if stage.scope != "dataset"}


def stages_with(scope: Scope) -> tuple[str, ...]:
    """Names of the evaluation stages with a result file of this scope, in registry order."""
    return tuple(name for name, stage in STAGES.items() if stage.scope == scope and stage.results)


def stage_configs() -> dict[str, type]:
    """Evaluation stage -> the dataclass its job builds from that block (`ddae.config_checks`)."""
    return {name: stage.config for name, stage in evaluation_stages().items() if stage.config}


def stage_output(stage: str, suffix: str | None = None, file: str | None = None) -> str:
    """The wildcard pattern of a stage's result file (``file``: one of its other files by
    name; ``suffix`` replaces the extension: the metrics log, the grid's JSON choice, the FID
    sample grid)."""
    path = (STAGES[stage].results[file] if file else STAGES[stage].result).path
    return path if suffix is None else path.rsplit(".", 1)[0] + suffix


def result_files() -> tuple[tuple[str, str, tuple[str, ...], bool], ...]:
    """(pattern under results/<dataset>/, contract kind, writers, of its checkpoint) of every
    declared result file (`ddae.pipeline.result_kinds` locates result paths by them)."""
    return tuple(
        (file.pattern, file.contract, file.writers, file.of_checkpoint)
        for stage in STAGES.values()
        for file in stage.results.values()
    )


# --- the stages (paper section, authors' file or table beside each value) --------------------

ONE_EPOCH = Miniature(one_epoch=True)  # classifiers: 1 epoch, no warm-up

register(
    Stage(
        "fid",
        "samples for FID (paper Sec. 3.2, Figures 4-5, Table 2)",
        SamplingConfig,
        "checkpoint",
        {
            "result": ResultFile(
                "{run}/fid/epoch{epoch}.json", "fid", ("ddae.fid.sample_and_score",), True
            )
        },
        param="sampling",
        miniature=Miniature({"samples": 64}),  # 50,000 in the paper (Sec. 3.2)
    )
)
# Augmented views (5-10 in config.yaml): the miniature's feature caches keep one, as every grid
# t caches them anew and 64 px networks cost ~2 CPU-min per t; latent caches keep two, so DiT's
# per-epoch choice of a cached version is exercised.
register(
    Stage(
        "features",
        "all-layer feature cache of the grid search (App. B)",
        FeatureCacheConfig,
        param="features",
        miniature=Miniature(caps={"views": 1}),
    )
)
register(
    Stage(
        "grid",
        "the jointly trained grid-search probes over (layer, t) (App. B, Figure 2)",
        GridSearchConfig,
        "checkpoint",
        {
            "result": ResultFile("{run}/grid/epoch{epoch}.csv", "grid"),
            "choice": ResultFile(
                "{run}/grid/epoch{epoch}.json", "grid_choice", ("ddae.probing.grid_search",), True
            ),
            "timestep": ResultFile(
                "{run}/grid_timesteps/epoch{epoch}/t{t}.json",
                "grid_timestep",
                ("ddae.grid_timesteps.probe_timestep",),
                True,
            ),
            # the findings' linear probe on raw pixels, with the grid's protocol
            "pixels": ResultFile(
                "{run}/grid/pixels.json", "pixel_probe", ("ddae.probing.pixel_probe",)
            ),
        },
        param="probe",
        miniature=ONE_EPOCH,
    )
)
register(
    Stage(
        "linear_probe",
        "the final linear probe, network in the loop (Table 6)",
        LinearProbeConfig,
        "checkpoint",
        {
            "result": ResultFile(
                "{run}/linear/epoch{epoch}.json", "probe", ("ddae.probing.linear_probe",), True
            ),
            # ddae.probe_pairs: a probe at the pair its folder names (results/validation.md)
            "named_pair": ResultFile(
                "{run}/linear/layer{layer}_t{t}/epoch{epoch}.json",
                "probe",
                ("ddae.probing.linear_probe",),
                True,
            ),
        },
        param="probe",
        miniature=ONE_EPOCH,
    )
)
register(
    Stage(
        "align_uniform",
        "alignment and uniformity, Eq. 3-4 (Sec. 3.3, Figure 3)",
        AlignUniformConfig,
        "checkpoint",
        {"result": ResultFile("{run}/align_uniform/epoch{epoch}.csv", "align_uniform")},
        param="config",
        miniature=Miniature({"images": 64}),  # 10,000 in config.yaml
    )
)
register(
    Stage(
        "finetune",
        "fine-tuning the truncated encoder (Table 7)",
        ClassifierTrainingConfig,
        "final",
        {"result": ResultFile("{run}/finetune/epoch{epoch}.json", "probe", ("finetune",), True)},
        param="training",
        miniature=ONE_EPOCH,
    )
)
register(
    Stage(
        "scratch",
        "the truncated encoder trained from random initialisation (Table 8)",
        ClassifierTrainingConfig,
        "final",
        {"result": ResultFile("{run}/scratch.json", "accuracy", ("train_from_scratch",))},
        param="training",
        miniature=ONE_EPOCH,
    )
)
register(
    Stage(
        "noisy",
        "noise-conditional MLP head on frozen features (Sec. 4.1.3, Figure 6)",
        NoisyHeadConfig,
        "final",
        {"result": ResultFile("{run}/noisy/epoch{epoch}.csv", "noisy")},
        param="head",
        miniature=ONE_EPOCH,
    )
)
register(
    Stage(
        "latents",
        "DiT runs - cached SD-VAE latents (App. A)",
        LatentCacheConfig,
        param="latents",
        # 256 px images -> 64 px before the VAE (latents 8x8 instead of 32x32)
        miniature=Miniature({"image_size": 64}, caps={"views": 2}),
    )
)
# The supervised baselines (Table 8, Figure 6): per dataset, configured under `supervised`.
register(
    Stage(
        "wrn",
        "the supervised WideResNet-28-10 (Table 8)",
        scope="dataset",
        results={"result": ResultFile("baselines/wrn.json", "accuracy", ("train_supervised_wrn",))},
    )
)
register(
    Stage(
        "noisy_wrn",
        "noise-conditional WideResNets under VP and VE perturbation (Figure 6)",
        scope="dataset",
        results={"result": ResultFile("baselines/noisy_wrn_{perturbation}.csv", "noisy")},
    )
)
