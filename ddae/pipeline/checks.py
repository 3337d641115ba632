"""The one validation pass over config.yaml before any job (issue 21): the schema (its stage
sections generated from the config classes, `ddae.pipeline.schema`), the paper's shape
(`ddae.paper_shape`), every value a job reads (`ddae.config_checks`, once, in the main process)
and the cross-references the schema cannot express (this module). The first mistake stops
Snakemake with one message naming the key, its line in config.yaml and the runs sharing its
YAML anchor (`ddae.config_messages`). Imports no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ddae.config_messages import check_schema, config_mistakes_reported
from ddae.configs import ConfigError
from ddae.paper_shape import check_paper_shape

SCHEMA = Path("workflow") / "schemas" / "config.schema.yaml"
# Values in these run keys change the trained weights (ddae.pipeline.layout.RUN_SLICE_KEYS)
WEIGHT_KEYS = ("network", "framework", "training")
# what a findings model and its untrained twin must share in their evaluation blocks
SHARED_EVALUATION_KEYS = ("steps", "grid_t", "grid", "features")


def check_pretraining_references(config: Mapping[str, Any]) -> None:
    """Each run's dataset exists, its epochs increase, it has training settings or a source,
    a DiT comes from a DiT checkpoint, and its network's resolution is its dataset's."""
    datasets = config["datasets"]
    for name, run in config.get("pretraining", {}).items():
        where = f"pretraining.{name}"
        if run["dataset"] not in datasets:
            raise ConfigError(
                f"{where}.dataset: {run['dataset']!r} is not under datasets "
                f"(defined: {', '.join(datasets)})"
            )
        epochs = run["epochs"]
        if list(epochs) != sorted(set(epochs)):
            raise ConfigError(f"{where}.epochs: must increase strictly, got {epochs}")
        source = run.get("source", {})
        if not source and "training" not in run:
            raise ConfigError(f"{where}.training: a run trained here needs its training settings")
        if source and len(epochs) != 1:
            raise ConfigError(
                f"{where}.epochs: a run with a source has one checkpoint, got {epochs}"
            )
        if (run["network"]["arch"] == "dit") != (
            source.get("official", source.get("stand_in")) == "dit"
        ):
            raise ConfigError(
                f"{where}.source: a DiT network comes from an official DiT "
                "checkpoint (or its stand-in), and only a DiT network does"
            )
        resolution = datasets[run["dataset"]]["resolution"]
        if run["network"]["arch"] != "dit" and run["network"].get("resolution") != resolution:
            raise ConfigError(
                f"{where}.network.resolution: {run['network'].get('resolution')} differs from "
                f"datasets.{run['dataset']}.resolution {resolution}"
            )


def check_report_references(config: Mapping[str, Any]) -> None:
    """The tables, figures and baselines name runs and datasets that exist."""
    pretraining, supervised = config.get("pretraining", {}), config.get("supervised", {})
    tables = config.get("tables", {})
    for key, name in tables.get("models", {}).items():
        known = supervised if key.endswith("_wrn") else pretraining
        if name not in known:
            section = "supervised" if key.endswith("_wrn") else "pretraining"
            raise ConfigError(f"tables.models.{key}: no {section} entry {name!r}")
    for figure, lines in config.get("figures", {}).items():
        for label, name in lines.items():
            if name not in pretraining:
                raise ConfigError(f"figures.{figure}.{label}: no pretraining run {name!r}")
    for dataset in supervised:
        if dataset not in config["datasets"]:
            raise ConfigError(f"supervised.{dataset}: not a dataset under datasets")
    for i, column in enumerate(tables.get("table5", [])):
        if column["run"] not in pretraining:
            raise ConfigError(f"tables.table5[{i}].run: no pretraining run {column['run']!r}")


# What a findings replicate shares with the model's own run, seed values aside: the weights'
# recipe, the final epoch and every evaluation stage the findings read (ddae.findings).
REPLICATE_KEYS = (
    "dataset",
    "final epoch",
    *WEIGHT_KEYS,
    *(
        f"evaluation.{key}"
        for key in (*SHARED_EVALUATION_KEYS, "layer_t", "linear_probe", "finetune")
    ),
)


def _replicated(run: Mapping[str, Any], part: str) -> Any:
    if part == "final epoch":
        return run["epochs"][-1]
    section, _, key = part.partition(".")
    value = run.get(section) if not key else run.get(section, {}).get(key)
    return _without_seeds(value)


def _without_seeds(value: Any) -> Any:
    """A run's mapping with every ``seed`` key removed (replicates differ in these only)."""
    if isinstance(value, Mapping):
        return {k: _without_seeds(v) for k, v in value.items() if k != "seed"}
    return value


def check_findings(config: Mapping[str, Any]) -> None:
    """Each findings model's runs exist, share the weights' recipe and grid, and the reference
    is the untrained twin (epochs: [0], ddae.findings); its replicates are the same two runs at
    other seeds."""
    pretraining = config.get("pretraining", {})
    for i, model in enumerate(config.get("findings", {}).get("models", [])):
        pairs = [model, *model.get("replicates", [])]
        for j, pair in enumerate(pairs):
            where = f"findings.models[{i}]" + (f".replicates[{j - 1}]" if j else "")
            _check_twins(pretraining, pair, where)
            for key in ("pretrained", "random_init") if j else ():
                replicate, original = pretraining[pair[key]], pretraining[model[key]]
                for part in REPLICATE_KEYS:
                    if _replicated(replicate, part) != _replicated(original, part):
                        raise ConfigError(
                            f"{where}.{key}: run {pair[key]!r} differs from {model[key]!r} in "
                            f"{part} beyond its seed values"
                        )


def _check_twins(pretraining: Mapping[str, Any], model: Mapping[str, Any], where: str) -> None:
    for key in ("pretrained", "random_init"):
        if model[key] not in pretraining:
            raise ConfigError(f"{where}.{key}: no pretraining run {model[key]!r}")
        if "grid" not in pretraining[model[key]].get("evaluation", {}):
            raise ConfigError(f"{where}.{key}: run {model[key]!r} has no grid stage")
    trained, untrained = pretraining[model["pretrained"]], pretraining[model["random_init"]]
    pair = f"runs {model['pretrained']!r} and {model['random_init']!r}"
    if untrained["epochs"] != [0]:
        raise ConfigError(
            f"{where}.random_init: run {model['random_init']!r} needs "
            f"epochs: [0] (its untrained weights), got {untrained['epochs']}"
        )
    for key in ("dataset", *WEIGHT_KEYS):
        if trained.get(key) != untrained.get(key):
            raise ConfigError(f"{where}: {pair} differ in {key}")
    for key in SHARED_EVALUATION_KEYS:
        if trained.get("evaluation", {}).get(key) != untrained.get("evaluation", {}).get(key):
            raise ConfigError(f"{where}: {pair} differ in evaluation.{key}")


def check_pipeline_config(
    config: Mapping[str, Any], basedir: str | Path, config_file: str | Path, main_process: bool
) -> None:
    """The whole pass (module docstring); a mistake prints one message and exits."""
    with config_mistakes_reported(config_file):
        check_schema(config, Path(basedir) / SCHEMA, config_file)
        check_paper_shape(config)  # sampler steps vs T, layer and t ranges (cheap)
        if main_process:  # every value a job reads, checked once (not in every cluster job)
            from ddae.config_checks import check_config

            check_config(config)
        check_pretraining_references(config)
        check_report_references(config)
        check_findings(config)
