# Measuring each pretrained checkpoint (paper Sec. 3.2 and 4): FID of its samples, features of
# every decoder block cached per timestep, the (layer, t) grid search over them (Figure 2,
# Appendix B) and the linear probe at the chosen pair (Tables 2-4). Each rule gets its stage's
# config slice from the run's `evaluation` block; a stage missing there is not run. Features and
# probes read the run's source (`source_files`): its dataset's images, or a DiT's VAE latents.


localrules:
    download_inception,


rule download_inception:
    output:
        INCEPTION_WEIGHTS,
    params:
        # clean-fid's Inception: URL and sha256 from ddae.downloads.INCEPTION
        url=INCEPTION.url,
        checksum=INCEPTION.checksum,
    log:
        "logs/download_inception.log",
    benchmark:
        "logs/download_inception.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/download.py"


rule fid_reference:
    input:
        train=lambda wildcards: dataset_split(wildcards.dataset, "train"),
        weights=fid_weights,
    output:
        "results/{dataset}/fid/reference.npz",
    params:
        extractor=FID["extractor"],
        batch_size=FID["batch_size"],
    resources:
        gpu=FID.get("gpus", 1),
        gpu_slot=min(FID.get("gpus", 1), 1),
    log:
        "logs/{dataset}/fid_reference.log",
    benchmark:
        "logs/{dataset}/fid_reference.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/fid_reference.py"


rule sample_fid:
    input:
        checkpoint="results/{dataset}/{run}/checkpoints/epoch{epoch}.pt",
        reference="results/{dataset}/fid/reference.npz",
        weights=fid_weights,
    output:
        json=stage_output("fid"),
        grid=stage_output("fid", ".png"),
    params:
        sampling=lambda wildcards: evaluation_stage(wildcards, "fid"),
        extractor=FID["extractor"],
    resources:
        gpu=evaluation_gpus,
        gpu_slot=lambda wildcards: min(evaluation_gpus(wildcards), 1),
    log:
        "logs/{dataset}/{run}/sample_fid_epoch{epoch}.log",
    benchmark:
        "logs/{dataset}/{run}/sample_fid_epoch{epoch}.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/sample_fid.py"


rule cache_features:
    input:
        unpack(source_files),
        checkpoint="results/{dataset}/{run}/checkpoints/epoch{epoch}.pt",
    output:
        # deleted once its grid search is done: at paper scale one t is ~3 GB per view set
        temp(directory("results/{dataset}/{run}/features/epoch{epoch}/t{t}")),
    params:
        features=lambda wildcards: evaluation_stage(wildcards, "features"),
        t=lambda wildcards: int(wildcards.t),
        steps=evaluation_steps,
    resources:
        gpu=evaluation_gpus,
        gpu_slot=lambda wildcards: min(evaluation_gpus(wildcards), 1),
    log:
        "logs/{dataset}/{run}/cache_features_epoch{epoch}_t{t}.log",
    benchmark:
        "logs/{dataset}/{run}/cache_features_epoch{epoch}_t{t}.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/cache_features.py"


rule grid_search:
    input:
        features=feature_directories,
    output:
        csv=stage_output("grid"),
        json=stage_output("grid", ".json"),
    params:
        probe=lambda wildcards: evaluation_stage(wildcards, "grid"),
    resources:
        gpu=evaluation_gpus,
        gpu_slot=lambda wildcards: min(evaluation_gpus(wildcards), 1),
    log:
        "logs/{dataset}/{run}/grid_search_epoch{epoch}.log",
    benchmark:
        "logs/{dataset}/{run}/grid_search_epoch{epoch}.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/grid_search.py"


rule linear_probe:
    input:
        unpack(source_files),
        checkpoint="results/{dataset}/{run}/checkpoints/epoch{epoch}.pt",
        choice=layer_t_choice,
    output:
        json=stage_output("linear_probe"),
        metrics=stage_output("linear_probe", ".metrics.jsonl"),
    params:
        probe=lambda wildcards: evaluation_stage(wildcards, "linear_probe"),
        layer_t=fixed_layer_t,
        steps=evaluation_steps,
    resources:
        gpu=evaluation_gpus,
        gpu_slot=lambda wildcards: min(evaluation_gpus(wildcards), 1),
    log:
        "logs/{dataset}/{run}/linear_probe_epoch{epoch}.log",
    benchmark:
        "logs/{dataset}/{run}/linear_probe_epoch{epoch}.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/linear_probe.py"
