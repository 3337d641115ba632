# Paths and config slices shared by the rules. Pure Python, no torch: every cluster job
# re-parses this file.

from ddae.datasets.registry import DATASETS as DATASET_REGISTRY
from ddae.datasets.registry import downloaded_sources
from ddae.downloads import INCEPTION
from ddae.official.sources import SOURCES
from ddae.official.sources import download_path as official_download
from ddae.official.sources import kind_of as official_kind_of
from ddae.planning_checks import verified_input

DATASETS = config["datasets"]
PRETRAINING = config.get("pretraining", {})
TABLES = config.get("tables", {})
FID = config.get("fid", {"extractor": "inception", "batch_size": 500})
SUPERVISED = config.get("supervised", {})

# clean-fid's Inception network (the paper's FID), fetched by a localrule instead of clean-fid's
# own download into /tmp, so compute nodes need no network.
INCEPTION_WEIGHTS = f"resources/downloads/inception/{INCEPTION.file}"

# Datasets with a download (ddae.datasets.registry); the bundled `digits` needs none.
DOWNLOADED_SOURCES = downloaded_sources()

# Values in these run keys change the trained weights; everything else about a run
# (epochs, gpus, minutes_per_epoch) only changes which jobs exist or how they are scheduled.
RUN_SLICE_KEYS = ("network", "framework", "training")


def check_cross_references():
    """Cross-field checks the schema cannot express; each error names the key.

    The evaluation blocks' shape (steps vs T, layer and t ranges) is checked by
    `ddae.paper_shape.check_paper_shape` in the Snakefile.
    """
    for name, run in PRETRAINING.items():
        where = f"pretraining.{name}"
        if run["dataset"] not in DATASETS:
            raise ConfigError(
                f"{where}.dataset: {run['dataset']!r} is not under datasets "
                f"(defined: {', '.join(DATASETS)})"
            )
        epochs = run["epochs"]
        if list(epochs) != sorted(set(epochs)):
            raise ConfigError(f"{where}.epochs: must increase strictly, got {epochs}")
        source = run.get("source", {})
        if not source and "training" not in run:
            raise ConfigError(
                f"{where}.training: a run trained here needs its training settings"
            )
        if source and len(epochs) != 1:
            raise ConfigError(
                f"{where}.epochs: a run with a source has one checkpoint, got {epochs}"
            )
        if (run["network"]["arch"] == "dit") != (source.get("official", source.get("stand_in"))
                                                 == "dit"):
            raise ConfigError(
                f"{where}.source: a DiT network comes from an official DiT "
                "checkpoint (or its stand-in), and only a DiT network does"
            )
        resolution = DATASETS[run["dataset"]]["resolution"]
        if run["network"]["arch"] != "dit" and run["network"].get("resolution") != resolution:
            raise ConfigError(
                f"{where}.network.resolution: {run['network'].get('resolution')} differs from "
                f"datasets.{run['dataset']}.resolution {resolution}"
            )
    for key, name in TABLES.get("models", {}).items():
        known = config.get("supervised", {}) if key.endswith("_wrn") else PRETRAINING
        if name not in known:
            section = "supervised" if key.endswith("_wrn") else "pretraining"
            raise ConfigError(f"tables.models.{key}: no {section} entry {name!r}")
    for figure, lines in config.get("figures", {}).items():
        for label, name in lines.items():
            if name not in PRETRAINING:
                raise ConfigError(f"figures.{figure}.{label}: no pretraining run {name!r}")
    for dataset in config.get("supervised", {}):
        if dataset not in DATASETS:
            raise ConfigError(f"supervised.{dataset}: not a dataset under datasets")
    for i, column in enumerate(TABLES.get("table5", [])):
        if column["run"] not in PRETRAINING:
            raise ConfigError(f"tables.table5[{i}].run: no pretraining run {column['run']!r}")


with config_mistakes_reported(CONFIG_FILE):
    check_cross_references()


def dataset_split(dataset, split):
    """A job's image split, checked while Snakemake plans (ddae.planning_checks)."""
    return verified_input(f"resources/data/{dataset}/{split}.npz")


def checkpoint_path(run, epoch):
    return f"results/{PRETRAINING[run]['dataset']}/{run}/checkpoints/epoch{epoch}.pt"


def checkpoint_input(wildcards):
    """The checkpoint a job reads, verified (size, content hash) while Snakemake plans, before
    it deletes any output (ddae.planning_checks)."""
    w = wildcards
    return verified_input(f"results/{w.dataset}/{w.run}/checkpoints/epoch{w.epoch}.pt")


def run_directory(run):
    return f"results/{PRETRAINING[run]['dataset']}/{run}"


def all_pretraining_checkpoints():
    return [checkpoint_path(run, e) for run, spec in PRETRAINING.items() for e in spec["epochs"]]


def dataset_source(wildcards):
    """The downloaded archive or folder a dataset is prepared from (none for digits)."""
    source = DOWNLOADED_SOURCES.get(wildcards.dataset)
    return [source] if source else []


def pretraining_run(wildcards):
    """The run a pretrain job belongs to; the path's dataset must be the run's dataset."""
    if wildcards.run not in PRETRAINING:
        raise ValueError(f"no pretraining run {wildcards.run!r} in config.yaml")
    run = PRETRAINING[wildcards.run]
    if run["dataset"] != wildcards.dataset:
        raise ValueError(
            f"run {wildcards.run!r} trains on {run['dataset']!r}, not {wildcards.dataset!r}"
        )
    return run


def run_slice(wildcards):
    """The config values that determine a run's weights (the pretrain rule's params)."""
    run = pretraining_run(wildcards)
    return {key: run[key] for key in RUN_SLICE_KEYS if key in run}


def pretraining_gpus(wildcards):
    return pretraining_run(wildcards)["gpus"]


def table5_columns():
    """Table 5 columns: each run's network spec and final epoch, with the paper's values."""
    return [
        {
            "label": column["label"],
            "network": PRETRAINING[column["run"]]["network"],
            "epochs": final_epoch(column["run"]),
            "paper": column.get("paper", {}),
        }
        for column in TABLES.get("table5", [])
    ]


# --- evaluation (paper Sec. 3-4: FID, features, probes, fine-tuning) -------------------------


def evaluation(run):
    """A run's evaluation block; stages absent from it are not run."""
    return PRETRAINING[run].get("evaluation", {})


def evaluated_epochs(run):
    """Checkpoint epochs that get FID, probes and alignment: all (Figures 3-4) or the final."""
    epochs = PRETRAINING[run]["epochs"]
    return list(epochs) if evaluation(run).get("checkpoints") == "all" else epochs[-1:]


def grid_timesteps(run):
    grid = evaluation(run)["grid_t"]
    return list(range(grid["start"], grid["stop"] + 1, grid["every"]))


def evaluation_stage(wildcards, stage):
    """The config of one evaluation stage of the job's run (its rule's params)."""
    pretraining_run(wildcards)  # checks the run and dataset wildcards
    spec = evaluation(wildcards.run)
    if stage not in spec:
        raise ValueError(f"pretraining.{wildcards.run}.evaluation has no {stage!r} stage")
    return spec[stage]


def evaluation_steps(wildcards):
    """The "t/steps" denominator of the run's timesteps (Table 9)."""
    return evaluation(wildcards.run)["steps"]


def evaluation_gpus(wildcards):
    return evaluation(wildcards.run).get("gpus", 1)


def training_gpus(wildcards):
    return evaluation(wildcards.run).get("training_gpus", 1)


def fid_weights(wildcards=None):
    """The Inception weights the FID extractor loads (none for an offline extractor)."""
    return [INCEPTION_WEIGHTS] if FID["extractor"] == "inception" else []


def timestep_probe_files(wildcards):
    """The per-t probe results of every grid timestep of one checkpoint (grid_search's input)."""
    directory = run_directory(wildcards.run)
    return [
        f"{directory}/grid_timesteps/epoch{wildcards.epoch}/t{t}.json"
        for t in grid_timesteps(wildcards.run)
    ]


def feature_cache_dir(wildcards):
    """Where probe_timestep caches one t's features while it probes them (then deletes them)."""
    return f"{run_directory(wildcards.run)}/features/epoch{wildcards.epoch}/t{wildcards.t}"


def grid_choice(run, epoch):
    """The grid-search winner of one checkpoint, if the run picks (layer, t) by grid search,
    through the grid_search checkpoint (evaluate.smk: an unchanged choice reruns nothing)."""
    if evaluation(run).get("layer_t", "grid") != "grid":
        return []
    epoch = final_epoch(run) if epoch is None else epoch
    grid = checkpoints.grid_search.get(dataset=PRETRAINING[run]["dataset"], run=run, epoch=epoch)
    return [grid.output.json]


def grid_epochs(run):
    """Checkpoints that get a grid search: every evaluated one, or with `grid_checkpoints: final`
    the final one only (Figure 4: each ablation's own grid at its final checkpoint serves all)."""
    if evaluation(run).get("grid_checkpoints", "all") == "final":
        return evaluated_epochs(run)[-1:]
    return evaluated_epochs(run)


def layer_t_choice(wildcards):
    """The grid-search result that picks (layer, t) for this checkpoint: its own grid when
    every checkpoint has one, else the final checkpoint's (also for rules without an epoch)."""
    epoch = getattr(wildcards, "epoch", None)
    if epoch is not None and int(epoch) not in grid_epochs(wildcards.run):
        epoch = None
    return grid_choice(wildcards.run, epoch)


def layer_t_choice_final(wildcards):
    """Always the final checkpoint's grid search: alignment and uniformity follow one (layer, t)
    through training (Figure 3)."""
    return grid_choice(wildcards.run, None)


def fixed_layer_t(wildcards):
    """Table 9's fixed (layer, t) pair when the run does not use its grid search."""
    layer_t = evaluation(wildcards.run).get("layer_t", "grid")
    return None if layer_t == "grid" else layer_t


def final_epoch(run):
    return PRETRAINING[run]["epochs"][-1]


# Result files of the evaluation stages: per evaluated checkpoint, or of the final one only.
CHECKPOINT_STAGES = ("fid", "grid", "linear_probe", "align_uniform")
FINAL_STAGES = ("finetune", "scratch", "noisy")


# Where each evaluation stage writes its result, one table for the rules' outputs (`stage_output`)
# and for the tables, figures and targets (`stage_file`).
STAGE_FILES = {
    "fid": "fid/epoch{epoch}.json",
    "grid": "grid/epoch{epoch}.csv",
    "linear_probe": "linear/epoch{epoch}.json",
    "align_uniform": "align_uniform/epoch{epoch}.csv",
    "finetune": "finetune/epoch{epoch}.json",
    "scratch": "scratch.json",
    "noisy": "noisy/epoch{epoch}.csv",
}


def stage_output(stage, suffix=None):
    """The wildcard pattern of a stage's result file (``suffix`` replaces its extension: the
    metrics log, the grid's JSON choice, the FID sample grid)."""
    path = f"results/{{dataset}}/{{run}}/{STAGE_FILES[stage]}"
    return path if suffix is None else path.rsplit(".", 1)[0] + suffix


def stage_file(run, stage, epoch=None, suffix=None):
    """A run's result file of one evaluation stage (epoch: the final one unless given), or None
    when the run has no such stage."""
    if stage not in evaluation(run):
        return None
    epoch = final_epoch(run) if epoch is None else epoch  # epoch 0: the untrained weights
    dataset = PRETRAINING[run]["dataset"]
    return stage_output(stage, suffix).format(dataset=dataset, run=run, epoch=epoch)


def evaluation_targets():
    """Every evaluation output the config asks for."""
    targets = [
        stage_file(run, stage, epoch)
        for run in PRETRAINING
        for epoch in evaluated_epochs(run)
        for stage in CHECKPOINT_STAGES
        if stage in evaluation(run) and (stage != "grid" or epoch in grid_epochs(run))
    ]
    targets += [
        stage_file(run, stage)
        for run in PRETRAINING
        for stage in FINAL_STAGES
        if stage in evaluation(run)
    ]
    return targets + [f"results/{dataset}/baselines/wrn.json" for dataset in SUPERVISED]


def partial_state(wildcards, name):
    """Where an interrupted training job keeps its state: outside the declared outputs, which
    Snakemake deletes when a job fails."""
    return f"{run_directory(wildcards.run)}/partial/{name}"


def supervised_baseline(wildcards):
    """The dataset's supervised WideResNet settings (Table 8)."""
    if wildcards.dataset not in SUPERVISED:
        raise ValueError(f"no supervised baseline for dataset {wildcards.dataset!r} in config")
    return SUPERVISED[wildcards.dataset]


def noisy_baseline(wildcards):
    """The dataset's noise-conditional WideResNet settings (Figure 6)."""
    spec = supervised_baseline(wildcards).get("noisy")
    if spec is None:
        raise ValueError(f"supervised.{wildcards.dataset} has no noisy baseline in config")
    return spec


# --- checkpoint sources (paper Appendix A): trained here, official, or a smoke stand-in -------

# Where each official download lands (files for pickles/state dicts, folders for diffusers):
# names from ddae.official.sources.SOURCES.
OFFICIAL_FILES = {kind: source.name for kind, source in SOURCES.items() if not source.files}
OFFICIAL_FOLDERS = {kind: source.name for kind, source in SOURCES.items() if source.files}


def run_source(run):
    return PRETRAINING[run].get("source", {})


OFFICIAL_RUNS = [run for run in PRETRAINING if "official" in run_source(run)]
STAND_IN_RUNS = [run for run in PRETRAINING if "stand_in" in run_source(run)]
TRAINED_RUNS = [run for run in PRETRAINING if not run_source(run)]
DIT_RUNS = [run for run, spec in PRETRAINING.items() if spec["network"]["arch"] == "dit"]


def runs_pattern(runs):
    """A wildcard constraint matching exactly these run names (nothing when empty)."""
    return "|".join(runs) if runs else "(?!)"


def official_source(wildcards):
    return official_download(pretraining_run(wildcards)["source"]["official"])


def dit_network(wildcards):
    """The DiT network spec an official DiT import is checked against (None otherwise)."""
    run = pretraining_run(wildcards)
    return run["network"] if run["network"]["arch"] == "dit" else None


def source_files(wildcards):
    """What a run's feature, probe and fine-tuning jobs read (`ddae.sources.open_source`): its
    dataset's image splits, or for a DiT the VAE latents of rule cache_latents (Sec. 4.2)."""
    if wildcards.run in DIT_RUNS:
        return {"latents": f"results/{wildcards.dataset}/{wildcards.run}/latents"}
    return {split: dataset_split(wildcards.dataset, split) for split in ("train", "test")}


def vae_source(wildcards):
    """The VAE a DiT run encodes with: the SD VAE ft-MSE, or the smoke run's stand-in."""
    vae = evaluation(wildcards.run).get("vae", "sd_vae_ft_mse")
    return "results/stand_in/vae" if vae == "stand_in" else official_download("vae")
