# Official checkpoints (paper Appendix A): "For CIFAR-10, we retrieve official checkpoints from
# their codebases" (Ho et al.'s DDPM, EDM's DDPM++), and the ImageNet DiT-XL/2 with the Stable
# Diffusion VAE for the transfer rows of Tables 3-4. A run with `source: {official: ...}` gets
# its checkpoint by download (a localrule, checksummed, under resources/) and conversion into
# the project's own format, which every later stage reads unchanged. `source: {stand_in: ...}`
# (the smoke run) writes a randomly initialised network of the configured shape instead, so the
# transfer stages run offline; it is labelled a stand-in in the checkpoint and in no way trained.
# DiT runs work on cached VAE latents: latents once per run (cache_latents), then the same
# feature, grid-search, linear-probe and fine-tuning rules as the pixel-space networks
# (evaluate.smk, classify.smk), which read the latents through `Layout.source_files`.


localrules:
    download_official_file,
    download_official_folder,


rule download_official_file:
    output:
        "resources/downloads/official/{file}",
    wildcard_constraints:
        file=layout.official_names(folders=False),
    params:
        kind=lambda wildcards: layout.official_kind(wildcards.file),
    log:
        "logs/download_official_{file}.log",
    benchmark:
        "logs/download_official_{file}.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/download_official.py"


rule download_official_folder:
    output:
        directory("resources/downloads/official/{folder}"),
    wildcard_constraints:
        folder=layout.official_names(folders=True),
    params:
        kind=lambda wildcards: layout.official_kind(wildcards.folder),
    log:
        "logs/download_official_{folder}.log",
    benchmark:
        "logs/download_official_{folder}.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/download_official.py"


rule import_official:
    input:
        source=layout.official_source,
    output:
        "results/{dataset}/{run}/checkpoints/epoch{epoch}.pt",
    wildcard_constraints:
        run=layout.runs_pattern("official"),
    params:
        kind=lambda wildcards: layout.pretraining_run(wildcards)["source"]["official"],
        epoch=lambda wildcards: int(wildcards.epoch),
        expected=lambda wildcards: {
            key: layout.pretraining_run(wildcards)[key] for key in ("network", "framework")
        },
        network=lambda wildcards: layout.dit_network(wildcards),
    log:
        "logs/{dataset}/{run}/import_official_epoch{epoch}.log",
    benchmark:
        "logs/{dataset}/{run}/import_official_epoch{epoch}.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/import_official.py"


rule stand_in_checkpoint:
    output:
        "results/{dataset}/{run}/checkpoints/epoch{epoch}.pt",
    wildcard_constraints:
        run=layout.runs_pattern("stand_in"),
    params:
        kind=lambda wildcards: layout.pretraining_run(wildcards)["source"]["stand_in"],
        spec=lambda wildcards: layout.pretraining_run(wildcards)["network"],
        seed=lambda wildcards: layout.pretraining_run(wildcards)["source"].get("seed", 0),
    log:
        "logs/{dataset}/{run}/stand_in_epoch{epoch}.log",
    benchmark:
        "logs/{dataset}/{run}/stand_in_epoch{epoch}.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/stand_in.py"


rule stand_in_vae:
    output:
        directory("results/stand_in/vae"),
    params:
        kind="vae",
        spec={},
        seed=0,
    log:
        "logs/stand_in_vae.log",
    benchmark:
        "logs/stand_in_vae.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/stand_in.py"


rule cache_latents:
    input:
        vae=layout.vae_source,
        train=layout.train_split,
        test=layout.test_split,
    output:
        directory("results/{dataset}/{run}/latents"),
    params:
        **layout.stage_params("latents"),
    resources:
        gpu=layout.evaluation_gpus,
        gpu_slot=layout.evaluation_gpu_slot,
    log:
        "logs/{dataset}/{run}/cache_latents.log",
    benchmark:
        "logs/{dataset}/{run}/cache_latents.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/cache_latents.py"
