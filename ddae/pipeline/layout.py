"""Where the pipeline's files lie and what each rule gets, from config.yaml (issue 21).

`Layout` holds the config and answers the rules' questions (workflow/rules/*.smk): paths of
checkpoints, datasets and result files (`ddae.pipeline.stages` declares the result files), the
targets of ``rule all``, and each job's params slice and resources. Methods that take
``wildcards`` are Snakemake input, params and resource functions, whose parameters Snakemake
reads once (`ddae.pipeline.rule_functions`); a value that is only a path of the wildcards is a
pattern string instead, which costs Snakemake no function call per job. Run layout (paper
Appendix A, Sec. 3-4): results/<dataset>/<run>/checkpoints/epoch<E>.pt, then one folder per
stage.

Imports no torch: every Snakemake process, cluster jobs included, builds one while it parses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ddae.datasets.registry import downloaded_sources, registered_download
from ddae.downloads import INCEPTION, Download
from ddae.official.sources import SOURCES, kind_of
from ddae.official.sources import download_path as official_download
from ddae.paper_shape import decoder_layer_count
from ddae.pipeline.contracts import locate, verified_result
from ddae.pipeline.rule_functions import known_parameters, rule_functions
from ddae.pipeline.stages import STAGES, runner_stages, stage_output, stages_with
from ddae.planning_checks import verified_input

# clean-fid's Inception network (the paper's FID), fetched by a localrule instead of clean-fid's
# own download into /tmp, so compute nodes need no network.
INCEPTION_WEIGHTS = f"resources/downloads/inception/{INCEPTION.file}"

# Values in these run keys change the trained weights; everything else about a run
# (epochs, gpus, minutes_per_epoch) only changes which jobs exist or how they are scheduled.
RUN_SLICE_KEYS = ("network", "framework", "training")

# FID settings when config.yaml has no `fid` block
DEFAULT_FID = {"extractor": "inception", "batch_size": 500}

# A run's folder as a pattern of a job's wildcards (`Layout.run_directory` for a run's name): the
# same folder, as every job checks that its dataset is its run's (`Layout.pretraining_run`)
RUN_DIRECTORY = "results/{dataset}/{run}"


def alternatives(names: list[str]) -> str:
    """A wildcard constraint matching exactly these names (nothing when empty)."""
    return "|".join(names) if names else "(?!)"


@rule_functions
class Layout:
    """The pipeline's paths, targets and params slices for one config (module docstring).

    ``checkpoints`` is Snakemake's ``checkpoints`` object: the grid_search checkpoint's output
    is the (layer, t) choice the probes and classifiers read (`grid_choice`)."""

    def __init__(self, config: Mapping[str, Any], checkpoints: Any = None) -> None:
        self.config = config
        self.datasets = config["datasets"]
        self.pretraining = config.get("pretraining", {})
        self.tables = config.get("tables", {})
        self.fid = config.get("fid", DEFAULT_FID)
        self.supervised = config.get("supervised", {})
        self.checkpoints = checkpoints
        self.downloaded_sources = downloaded_sources()  # datasets with a download (not digits)
        self.inception = INCEPTION
        self.inception_weights = INCEPTION_WEIGHTS

    stage_output = staticmethod(stage_output)
    runner_stages = staticmethod(runner_stages)

    # --- datasets and checkpoints ------------------------------------------------------------

    def dataset_split(self, dataset: str, split: str) -> str:
        """A job's image split, checked while Snakemake plans (ddae.planning_checks)."""
        return verified_input(f"resources/data/{dataset}/{split}.npz")

    def train_split(self, wildcards: Any) -> str:
        return self.dataset_split(wildcards.dataset, "train")

    def test_split(self, wildcards: Any) -> str:
        return self.dataset_split(wildcards.dataset, "test")

    def download_constraints(self) -> dict[str, str]:
        """download_dataset's wildcards: the datasets with a download and their files."""
        files = [re.escape(path.rsplit("/", 1)[1]) for path in self.downloaded_sources.values()]
        return {"dataset": alternatives(list(self.downloaded_sources)), "file": alternatives(files)}

    def registered_download(self, wildcards: Any) -> Download:
        return registered_download(wildcards.dataset, wildcards.file)

    def dataset_source(self, wildcards: Any) -> list[str]:
        """The downloaded archive or folder a dataset is prepared from (none for digits)."""
        source = self.downloaded_sources.get(wildcards.dataset)
        return [source] if source else []

    def run_directory(self, run: str) -> str:
        return f"results/{self.pretraining[run]['dataset']}/{run}"

    def checkpoint_path(self, run: str, epoch: int) -> str:
        return f"{self.run_directory(run)}/checkpoints/epoch{epoch}.pt"

    def checkpoint_input(self, wildcards: Any) -> str:
        """The checkpoint a job reads, verified (size, content hash) while Snakemake plans,
        before it deletes any output (ddae.planning_checks)."""
        w = wildcards
        return verified_input(f"results/{w.dataset}/{w.run}/checkpoints/epoch{w.epoch}.pt")

    def all_pretraining_checkpoints(self) -> list[str]:
        return [
            self.checkpoint_path(run, epoch)
            for run, spec in self.pretraining.items()
            for epoch in spec["epochs"]
        ]

    def final_epoch(self, run: str) -> int:
        return self.pretraining[run]["epochs"][-1]

    @staticmethod
    def partial_state(name: str) -> str:
        """Where an interrupted training job keeps its state, a pattern of the job's wildcards:
        outside the declared outputs, which Snakemake deletes when a job fails."""
        return f"{RUN_DIRECTORY}/partial/{name}"

    # --- runs --------------------------------------------------------------------------------

    def pretraining_run(self, wildcards: Any) -> Mapping[str, Any]:
        """The run a job belongs to; the path's dataset must be the run's dataset."""
        if wildcards.run not in self.pretraining:
            raise ValueError(f"no pretraining run {wildcards.run!r} in config.yaml")
        run = self.pretraining[wildcards.run]
        if run["dataset"] != wildcards.dataset:
            raise ValueError(
                f"run {wildcards.run!r} trains on {run['dataset']!r}, not {wildcards.dataset!r}"
            )
        return run

    def run_slice(self, wildcards: Any) -> dict[str, Any]:
        """The config values that determine a run's weights (the pretrain rule's params)."""
        run = self.pretraining_run(wildcards)
        return {key: run[key] for key in RUN_SLICE_KEYS if key in run}

    def pretraining_gpus(self, wildcards: Any) -> int:
        return self.pretraining_run(wildcards)["gpus"]

    def pretraining_gpu_slot(self, wildcards: Any) -> int:
        return min(self.pretraining_gpus(wildcards), 1)

    def run_source(self, run: str) -> Mapping[str, Any]:
        return self.pretraining[run].get("source", {})

    def runs_from(self, source: str | None) -> list[str]:
        """Runs whose checkpoint is `official`, a `stand_in`, or (None) trained here."""
        if source is None:
            return [run for run in self.pretraining if not self.run_source(run)]
        return [run for run in self.pretraining if source in self.run_source(run)]

    def runs_pattern(self, source: str | None) -> str:
        """The run wildcard of the rules that make a checkpoint from ``source`` (None: the
        pretrain rule)."""
        return alternatives(self.runs_from(source))

    def dit_runs(self) -> list[str]:
        return [run for run, spec in self.pretraining.items() if spec["network"]["arch"] == "dit"]

    @staticmethod
    def official_names(folders: bool) -> str:
        """The wildcard of the official downloads (ddae.official.sources): files (pickles,
        state dicts) or folders (diffusers)."""
        names = [source.name for source in SOURCES.values() if bool(source.files) == folders]
        return "|".join(names if folders else map(re.escape, names))

    official_kind = staticmethod(kind_of)

    def official_source(self, wildcards: Any) -> str:
        return official_download(self.pretraining_run(wildcards)["source"]["official"])

    def dit_network(self, wildcards: Any) -> Mapping[str, Any] | None:
        """The DiT network spec an official DiT import is checked against (None otherwise)."""
        run = self.pretraining_run(wildcards)
        return run["network"] if run["network"]["arch"] == "dit" else None

    def source_files(self, wildcards: Any) -> dict[str, str]:
        """What a run's feature, probe and fine-tuning jobs read (`ddae.sources.open_source`):
        its dataset's image splits, or for a DiT the VAE latents of rule cache_latents."""
        if wildcards.run in self.dit_runs():
            return {"latents": f"results/{wildcards.dataset}/{wildcards.run}/latents"}
        return {split: self.dataset_split(wildcards.dataset, split) for split in ("train", "test")}

    def vae_source(self, wildcards: Any) -> str:
        """The VAE a DiT run encodes with: the SD VAE ft-MSE, or the smoke run's stand-in."""
        vae = self.evaluation(wildcards.run).get("vae", "sd_vae_ft_mse")
        return "results/stand_in/vae" if vae == "stand_in" else official_download("vae")

    # --- evaluation (paper Sec. 3-4) ---------------------------------------------------------

    def evaluation(self, run: str) -> Mapping[str, Any]:
        """A run's evaluation block; stages absent from it are not run."""
        return self.pretraining[run].get("evaluation", {})

    def evaluated_epochs(self, run: str) -> list[int]:
        """Checkpoint epochs that get FID, probes and alignment: all (Figures 3-4) or the
        final."""
        epochs = self.pretraining[run]["epochs"]
        return list(epochs) if self.evaluation(run).get("checkpoints") == "all" else epochs[-1:]

    def grid_epochs(self, run: str) -> list[int]:
        """Checkpoints that get a grid search: every evaluated one, or with `grid_checkpoints:
        final` the final one only (Figure 4: each ablation's own final grid serves all)."""
        if self.evaluation(run).get("grid_checkpoints", "all") == "final":
            return self.evaluated_epochs(run)[-1:]
        return self.evaluated_epochs(run)

    def grid_timesteps(self, run: str) -> list[int]:
        grid = self.evaluation(run)["grid_t"]
        return list(range(grid["start"], grid["stop"] + 1, grid["every"]))

    def decoder_layers(self, run: str) -> int:
        """The run's decoder blocks ("layer k of N", Table 9)."""
        return decoder_layer_count(self.pretraining[run]["network"])

    def evaluation_stage(self, wildcards: Any, stage: str) -> Mapping[str, Any]:
        """The config of one evaluation stage of the job's run (its rule's params)."""
        self.pretraining_run(wildcards)  # checks the run and dataset wildcards
        spec = self.evaluation(wildcards.run)
        if stage not in spec:
            raise ValueError(f"pretraining.{wildcards.run}.evaluation has no {stage!r} stage")
        return spec[stage]

    def stage_params(self, *stages: str) -> dict[str, Any]:
        """The params of a rule that reads these stages' blocks: {keyword: function}, each
        stage's block under its declared keyword (`ddae.pipeline.stages`)."""
        return {
            STAGES[stage].param: known_parameters(
                lambda wildcards, stage=stage: self.evaluation_stage(wildcards, stage)
            )
            for stage in stages
        }

    def evaluation_steps(self, wildcards: Any) -> int:
        """The "t/steps" denominator of the run's timesteps (Table 9)."""
        return self.evaluation(wildcards.run)["steps"]

    def evaluation_gpus(self, wildcards: Any) -> int:
        return self.evaluation(wildcards.run).get("gpus", 1)

    def training_gpus(self, wildcards: Any) -> int:
        return self.evaluation(wildcards.run).get("training_gpus", 1)

    # A job's `gpu_slot` (the Snakefile): 1 for a GPU job, 0 on CPU
    def evaluation_gpu_slot(self, wildcards: Any) -> int:
        return min(self.evaluation_gpus(wildcards), 1)

    def training_gpu_slot(self, wildcards: Any) -> int:
        return min(self.training_gpus(wildcards), 1)

    @staticmethod
    def timestep(wildcards: Any) -> int:
        """The t of a job's path (probe_timestep's params)."""
        return int(wildcards.t)

    @staticmethod
    def metrics_beside_csv(wildcards: Any, output: Any) -> str:
        """The metrics file of a job whose first output is a CSV: beside it."""
        return output[0].replace(".csv", ".metrics.jsonl")

    def fid_weights(self, wildcards: Any = None) -> list[str]:
        """The Inception weights the FID extractor loads (none for an offline extractor)."""
        return [INCEPTION_WEIGHTS] if self.fid["extractor"] == "inception" else []

    def timestep_probe_files(self, wildcards: Any) -> list[str]:
        """The per-t probe results of every grid timestep of one checkpoint (grid_search's
        input)."""
        w = wildcards
        pattern = stage_output("grid", file="timestep")
        dataset = self.pretraining[w.run]["dataset"]
        return [
            self.verified(pattern.format(dataset=dataset, run=w.run, epoch=w.epoch, t=t))
            for t in self.grid_timesteps(w.run)
        ]

    # Where probe_timestep caches one t's features while it probes them (then deletes them)
    feature_cache_dir = f"{RUN_DIRECTORY}/features/epoch{{epoch}}/t{{t}}"

    # --- the (layer, t) choice ----------------------------------------------------------------

    def grid_choice(self, run: str, epoch: int | None) -> list[str]:
        """The grid-search winner of one checkpoint, if the run picks (layer, t) by grid
        search, through the grid_search checkpoint (evaluate.smk: an unchanged choice reruns
        nothing)."""
        if self.evaluation(run).get("layer_t", "grid") != "grid":
            return []
        epoch = self.final_epoch(run) if epoch is None else epoch
        dataset = self.pretraining[run]["dataset"]
        grid = self.checkpoints.grid_search.get(dataset=dataset, run=run, epoch=epoch)
        return [self.verified(grid.output.json)]

    def layer_t_choice(self, wildcards: Any) -> list[str]:
        """The grid-search result that picks (layer, t) for this checkpoint: its own grid when
        every checkpoint has one, else the final checkpoint's (also for rules without an
        epoch)."""
        epoch = getattr(wildcards, "epoch", None)
        if epoch is not None and int(epoch) not in self.grid_epochs(wildcards.run):
            epoch = None
        return self.grid_choice(wildcards.run, epoch)

    def layer_t_choice_final(self, wildcards: Any) -> list[str]:
        """Always the final checkpoint's grid search: alignment and uniformity follow one
        (layer, t) through training (Figure 3)."""
        return self.grid_choice(wildcards.run, None)

    def fixed_layer_t(self, wildcards: Any) -> Mapping[str, int] | None:
        """Table 9's fixed (layer, t) pair when the run does not use its grid search."""
        layer_t = self.evaluation(wildcards.run).get("layer_t", "grid")
        return None if layer_t == "grid" else layer_t

    # --- result files and targets -------------------------------------------------------------

    def verified(self, path: str) -> str:
        """``path``, after checking an existing result file against its contract while
        Snakemake plans (`ddae.pipeline.contracts.verified_result`), with its run's bounds:
        layer within the network's decoder blocks, t within the run's ``evaluation.steps``.
        A breach stops the run naming file and field, before any output is deleted."""
        place = locate(path)
        run = self.pretraining.get(place.run) if place is not None and place.run else None
        if run is None:
            return verified_result(path)
        levels = run.get("evaluation", {}).get("steps")
        return verified_result(path, layers=decoder_layer_count(run["network"]), levels=levels)

    def verified_all(self, paths: list[str]) -> list[str]:
        return [self.verified(path) for path in paths]

    def stage_file(
        self,
        run: str,
        stage: str,
        epoch: int | None = None,
        suffix: str | None = None,
        file: str | None = None,
    ) -> str | None:
        """A run's result file of one evaluation stage (epoch: the final one unless given;
        ``suffix`` and ``file`` as `stage_output`'s), or None when the run has no such stage."""
        if stage not in self.evaluation(run):
            return None
        epoch = self.final_epoch(run) if epoch is None else epoch  # epoch 0: untrained weights
        dataset = self.pretraining[run]["dataset"]
        return stage_output(stage, suffix, file).format(dataset=dataset, run=run, epoch=epoch)

    def grid_choice_file(self, run: str) -> str | None:
        """The grid search's chosen (layer, t): the JSON its rule writes beside the grid CSV
        (the tables and figures read the winner from it, never recompute it)."""
        return self.stage_file(run, "grid", suffix=".json")

    def baseline_file(self, dataset: str, name: str) -> str | None:
        """results/<dataset>/baselines/<name>, or None when the dataset has no such
        baseline."""
        spec = self.supervised.get(dataset)
        if spec is None or (name.startswith("noisy") and "noisy" not in spec):
            return None
        return f"results/{dataset}/baselines/{name}"

    def evaluation_targets(self) -> list[str]:
        """Every evaluation output the config asks for."""
        targets = [
            self.stage_file(run, stage, epoch)
            for run in self.pretraining
            for epoch in self.evaluated_epochs(run)
            for stage in stages_with("checkpoint")
            if stage in self.evaluation(run) and (stage != "grid" or epoch in self.grid_epochs(run))
        ]
        targets += [
            self.stage_file(run, stage)
            for run in self.pretraining
            for stage in stages_with("final")
            if stage in self.evaluation(run)
        ]
        baseline = STAGES["wrn"].result.path
        return targets + [baseline.format(dataset=dataset) for dataset in self.supervised]

    # --- supervised baselines (Table 8, Figure 6) ----------------------------------------------

    def supervised_baseline(self, wildcards: Any) -> Mapping[str, Any]:
        """The dataset's supervised WideResNet settings (Table 8)."""
        if wildcards.dataset not in self.supervised:
            raise ValueError(f"no supervised baseline for dataset {wildcards.dataset!r} in config")
        return self.supervised[wildcards.dataset]

    def noisy_baseline(self, wildcards: Any) -> Mapping[str, Any]:
        """The dataset's noise-conditional WideResNet settings (Figure 6)."""
        spec = self.supervised_baseline(wildcards).get("noisy")
        if spec is None:
            raise ValueError(f"supervised.{wildcards.dataset} has no noisy baseline in config")
        return spec
