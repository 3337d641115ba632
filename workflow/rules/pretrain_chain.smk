# Helpers of workflow/rules/pretrain.smk: which file each pretraining job starts from, with
# `segment_epochs`, and its scheduling resources. Pure Python, no torch (every cluster job
# re-parses this file). Uses checkpoint_path, run_directory, pretraining_run and verified_input
# (ddae.planning_checks: a start checkpoint is verified while Snakemake plans) of common.smk.


def segment_path(run, epoch):
    return f"{run_directory(run)}/segments/epoch{epoch}.pt"


def pretraining_links(run, epoch):
    """The jobs that end at listed checkpoint `epoch`: (previous listed epoch, segment ends)."""
    spec = PRETRAINING[run]
    earlier = [e for e in spec["epochs"] if e < epoch]
    first = earlier[-1] if earlier else 0
    every = spec.get("segment_epochs", 0)
    return first, list(range(first + every, epoch, every)) if every else []


def pretraining_job(wildcards, segment=False):
    """(start epoch, start file or None) of the job ending at the wildcards' epoch."""
    run = pretraining_run(wildcards)
    epoch = int(wildcards.epoch)
    if segment:
        owner = next((e for e in run["epochs"] if e > epoch), None)
        first, ends = pretraining_links(wildcards.run, owner) if owner else (0, [])
        if epoch not in ends:
            raise ValueError(
                f"epoch {epoch} is not a segment end of pretraining.{wildcards.run} "
                f"(epochs {run['epochs']}, segment_epochs {run.get('segment_epochs')})"
            )
    else:
        if epoch not in run["epochs"]:
            raise ValueError(
                f"epoch {epoch} is not in pretraining.{wildcards.run}.epochs {run['epochs']}"
            )
        first, ends = pretraining_links(wildcards.run, epoch)
        ends = [*ends, epoch]
    position = ends.index(epoch)
    if position > 0:
        return ends[position - 1], segment_path(wildcards.run, ends[position - 1])
    return first, checkpoint_path(wildcards.run, first) if first else None


def pretraining_start(wildcards):
    """The checkpoint (listed epoch or segment) a pretrain job continues from; [] = scratch."""
    return [verified_input(path)] if (path := pretraining_job(wildcards)[1]) else []


def segment_start(wildcards):
    return [verified_input(path)] if (path := pretraining_job(wildcards, segment=True)[1]) else []


def job_runtime(wildcards, segment=False):
    """Walltime in minutes for the epochs one job trains, with a margin."""
    span = int(wildcards.epoch) - pretraining_job(wildcards, segment)[0]
    return int(30 + 1.2 * span * pretraining_run(wildcards)["minutes_per_epoch"])


def snapshot_seconds(wildcards):
    """How often a running job saves its partial state (scheduling only, not a param)."""
    return round(60 * pretraining_run(wildcards).get("snapshot_minutes", 10))
