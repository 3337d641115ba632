# Diffusion pre-training (paper Appendix A, Table 5) as a chain of jobs per run: epoch<E>.pt is
# trained from the run's previous listed epoch, so every job fits a walltime, a longer epoch
# list reuses every existing checkpoint, and Figure 4's checkpoints fall out of the DAG.
#
# Walltime-sized segments: with `segment_epochs: N` in a run, a job spanning more than N epochs
# is split into jobs of at most N epochs. The intermediate states are ordinary checkpoints of
# the chain, results/<dataset>/<run>/segments/epoch<S>.pt, that are not targets and are
# deleted (temp) once the next job has used them; training resumes from a checkpoint exactly,
# so the split changes nothing in the weights (tests/test_slurm.py). `segment_epochs`,
# `snapshot_minutes`, `gpus` and `minutes_per_epoch` are scheduling values, not params: changing
# them reruns nothing that is already trained.
#
# An interrupted job keeps its partial state in results/<dataset>/<run>/partial/ (not a
# declared output, so Snakemake does not delete it), written every `snapshot_minutes`, and
# resumes from it when rerun or retried.


wildcard_constraints:
    dataset=r"[A-Za-z0-9_]+",
    run=r"[A-Za-z0-9_]+",
    epoch=r"\d+",


include: "pretrain_chain.smk"


rule pretrain:
    input:
        train=lambda wildcards: dataset_split(wildcards.dataset, "train"),
        start=pretraining_start,
    output:
        "results/{dataset}/{run}/checkpoints/epoch{epoch}.pt",
    wildcard_constraints:
        run=runs_pattern(TRAINED_RUNS),  # the others are imported (official.smk)
    params:
        run=run_slice,
        state_dir=lambda wildcards: f"{run_directory(wildcards.run)}/partial",
        metrics=lambda wildcards: f"{run_directory(wildcards.run)}/metrics.jsonl",
    resources:
        gpu=pretraining_gpus,
        gpu_slot=lambda wildcards: min(pretraining_gpus(wildcards), 1),
        runtime=job_runtime,
        snapshot_seconds=snapshot_seconds,
    log:
        "logs/{dataset}/{run}/pretrain_epoch{epoch}.log",
    benchmark:
        "logs/{dataset}/{run}/pretrain_epoch{epoch}.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/pretrain.py"


use rule pretrain as pretrain_segment with:
    input:
        train=lambda wildcards: dataset_split(wildcards.dataset, "train"),
        start=segment_start,
    output:
        temp("results/{dataset}/{run}/segments/epoch{epoch}.pt"),
    resources:
        gpu=pretraining_gpus,
        gpu_slot=lambda wildcards: min(pretraining_gpus(wildcards), 1),
        runtime=lambda wildcards: job_runtime(wildcards, segment=True),
        snapshot_seconds=snapshot_seconds,
    log:
        "logs/{dataset}/{run}/pretrain_segment_epoch{epoch}.log",
    benchmark:
        "logs/{dataset}/{run}/pretrain_segment_epoch{epoch}.benchmark.tsv",
