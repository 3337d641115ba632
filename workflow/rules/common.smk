# Paths and config slices shared by the rules. Pure Python, no torch: every cluster job
# re-parses this file.

DATASETS = config["datasets"]
PRETRAINING = config.get("pretraining", {})
TABLES = config.get("tables", {})

# Datasets with a download rule; the bundled `digits` needs none.
DOWNLOADED_SOURCES = {
    "cifar10": "resources/downloads/cifar10/cifar-10-batches-py",
    "tiny_imagenet": "resources/downloads/tiny_imagenet/tiny-imagenet-200.zip",
}

# Values in these run keys change the trained weights; everything else about a run
# (epochs, gpus, minutes_per_epoch) only changes which jobs exist or how they are scheduled.
RUN_SLICE_KEYS = ("network", "framework", "training")


def check_config():
    """Cross-field checks the schema cannot express; each error names the key."""
    for name, run in PRETRAINING.items():
        where = f"pretraining.{name}"
        if run["dataset"] not in DATASETS:
            raise ValueError(
                f"{where}.dataset: {run['dataset']!r} is not under datasets "
                f"(defined: {', '.join(DATASETS)})"
            )
        epochs = run["epochs"]
        if list(epochs) != sorted(set(epochs)):
            raise ValueError(f"{where}.epochs: must increase strictly, got {epochs}")
        resolution = DATASETS[run["dataset"]]["resolution"]
        if run["network"].get("resolution") != resolution:
            raise ValueError(
                f"{where}.network.resolution: {run['network'].get('resolution')} differs from "
                f"datasets.{run['dataset']}.resolution {resolution}"
            )
    for i, column in enumerate(TABLES.get("table5", [])):
        if column["run"] not in PRETRAINING:
            raise ValueError(f"tables.table5[{i}].run: no pretraining run {column['run']!r}")


check_config()


def dataset_split(dataset, split):
    return f"resources/data/{dataset}/{split}.npz"


def checkpoint_path(run, epoch):
    return f"results/{PRETRAINING[run]['dataset']}/{run}/checkpoints/epoch{epoch}.pt"


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


def previous_checkpoint(wildcards):
    """The checkpoint a pretrain job continues from: the run's previous listed epoch."""
    run = pretraining_run(wildcards)
    epoch = int(wildcards.epoch)
    if epoch not in run["epochs"]:
        raise ValueError(
            f"epoch {epoch} is not in pretraining.{wildcards.run}.epochs {run['epochs']}"
        )
    earlier = [e for e in run["epochs"] if e < epoch]
    return [checkpoint_path(wildcards.run, earlier[-1])] if earlier else []


def pretraining_gpus(wildcards):
    return pretraining_run(wildcards)["gpus"]


def pretraining_runtime(wildcards):
    """Walltime in minutes for the epochs one job trains, with a margin."""
    run = pretraining_run(wildcards)
    epoch = int(wildcards.epoch)
    earlier = [e for e in run["epochs"] if e < epoch]
    span = epoch - (earlier[-1] if earlier else 0)
    return int(30 + 1.2 * span * run["minutes_per_epoch"])


def table5_columns():
    """Table 5 columns: each run's network spec and final epoch, with the paper's values."""
    return [
        {
            "label": column["label"],
            "network": PRETRAINING[column["run"]]["network"],
            "epochs": PRETRAINING[column["run"]]["epochs"][-1],
            "paper": column.get("paper", {}),
        }
        for column in TABLES.get("table5", [])
    ]
