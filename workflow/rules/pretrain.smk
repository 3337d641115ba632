# Diffusion pre-training (paper Appendix A, Table 5) as a chain of jobs per run: epoch<E>.pt is
# trained from the run's previous listed epoch, so every job fits a walltime, a longer epoch
# list reuses every existing checkpoint, and Figure 4's checkpoints fall out of the DAG.
# An interrupted job keeps its partial state in results/<dataset>/<run>/partial/ (not a
# declared output, so Snakemake does not delete it) and resumes from it when rerun.


wildcard_constraints:
    dataset=r"[A-Za-z0-9_]+",
    run=r"[A-Za-z0-9_]+",
    epoch=r"\d+",


rule pretrain:
    input:
        train=lambda wildcards: dataset_split(wildcards.dataset, "train"),
        start=previous_checkpoint,
    output:
        "results/{dataset}/{run}/checkpoints/epoch{epoch}.pt",
    params:
        run=run_slice,
        state_dir=lambda wildcards: f"{run_directory(wildcards.run)}/partial",
        metrics=lambda wildcards: f"{run_directory(wildcards.run)}/metrics.jsonl",
    resources:
        gpu=pretraining_gpus,
        gpu_slot=lambda wildcards: min(pretraining_gpus(wildcards), 1),
        runtime=pretraining_runtime,
    log:
        "logs/{dataset}/{run}/pretrain_epoch{epoch}.log",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/pretrain.py"
