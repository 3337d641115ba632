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


rule pretrain:
    input:
        train=layout.train_split,
        start=pretraining.start,
    output:
        "results/{dataset}/{run}/checkpoints/epoch{epoch}.pt",
    wildcard_constraints:
        run=layout.runs_pattern(None),  # the others are imported (official.smk)
    params:
        run=layout.run_slice,
        state_dir=pretraining.state_dir,
        metrics=pretraining.metrics,
    resources:
        gpu=layout.pretraining_gpus,
        gpu_slot=layout.pretraining_gpu_slot,
        runtime=pretraining.runtime,
        snapshot_seconds=pretraining.snapshot_seconds,
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
        train=layout.train_split,
        start=pretraining.segment_start,
    output:
        temp("results/{dataset}/{run}/segments/epoch{epoch}.pt"),
    resources:
        gpu=layout.pretraining_gpus,
        gpu_slot=layout.pretraining_gpu_slot,
        runtime=pretraining.segment_runtime,
        snapshot_seconds=pretraining.snapshot_seconds,
    log:
        "logs/{dataset}/{run}/pretrain_segment_epoch{epoch}.log",
    benchmark:
        "logs/{dataset}/{run}/pretrain_segment_epoch{epoch}.benchmark.tsv",
