# Measuring each pretrained checkpoint (paper Sec. 3.2 and 4): FID of its samples, the (layer, t)
# grid search (Figure 2, Appendix B) one timestep per probe_timestep job (every decoder block's
# features cached, probed, deleted: one t's cache on disk per job) merged by grid_search, and the
# linear probe at the chosen pair (Tables 2-4). Each rule gets its stage's config slice from the
# run's `evaluation` block; a stage missing there is not run. Features and probes read the run's
# source (`Layout.source_files`): its dataset's images, or a DiT's VAE latents.


localrules:
    download_inception,


rule download_inception:
    output:
        layout.inception_weights,
    params:
        # clean-fid's Inception: URL and sha256 from ddae.downloads.INCEPTION
        url=layout.inception.url,
        checksum=layout.inception.checksum,
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
        train=layout.train_split,
        weights=layout.fid_weights,
    output:
        "results/{dataset}/fid/reference.npz",
    params:
        extractor=layout.fid["extractor"],
        batch_size=layout.fid["batch_size"],
    resources:
        gpu=layout.fid.get("gpus", 1),
        gpu_slot=min(layout.fid.get("gpus", 1), 1),
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
        checkpoint=layout.checkpoint_input,
        reference="results/{dataset}/fid/reference.npz",
        weights=layout.fid_weights,
    output:
        json=layout.stage_output("fid"),
        grid=layout.stage_output("fid", ".png"),
    params:
        **layout.stage_params("fid"),
        extractor=layout.fid["extractor"],
    resources:
        gpu=layout.evaluation_gpus,
        gpu_slot=layout.evaluation_gpu_slot,
    log:
        "logs/{dataset}/{run}/sample_fid_epoch{epoch}.log",
    benchmark:
        "logs/{dataset}/{run}/sample_fid_epoch{epoch}.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/sample_fid.py"


rule probe_timestep:
    input:
        unpack(layout.source_files),
        checkpoint=layout.checkpoint_input,
    output:
        layout.stage_output("grid", file="timestep"),
    params:
        **layout.stage_params("features", "grid"),
        t=layout.timestep,
        steps=layout.evaluation_steps,
        # deleted by the job itself once probed: at paper scale one t is ~3 GB (README)
        cache_dir=layout.feature_cache_dir,
    resources:
        gpu=layout.evaluation_gpus,
        gpu_slot=layout.evaluation_gpu_slot,
        # one t's cache on disk while the job runs; `--resources feature_caches=N` caps how many
        # exist at once (e.g. on a cluster, where gpu_slot does not throttle submissions)
        feature_caches=1,
    log:
        "logs/{dataset}/{run}/probe_timestep_epoch{epoch}_t{t}.log",
    benchmark:
        "logs/{dataset}/{run}/probe_timestep_epoch{epoch}_t{t}.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/probe_timestep.py"


# A checkpoint: once it has run, Snakemake re-plans the jobs that read its (layer, t) choice
# (`Layout.grid_choice`), and those whose choice JSON has the checksum it had when they last ran
# stay done. A grid rerun (a deleted CSV, an edited script) that picks the same pair reruns no
# linear probe, fine-tuning, noisy classifier or alignment job; `snakemake -n` still lists them.
checkpoint grid_search:
    input:
        timesteps=layout.timestep_probe_files,
    output:
        # first: the placeholder input while planning
        json=layout.stage_output("grid", file="choice"),
        csv=layout.stage_output("grid"),
    params:
        **layout.stage_params("grid"),
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
        unpack(layout.source_files),
        checkpoint=layout.checkpoint_input,
        choice=layout.layer_t_choice,
    output:
        json=layout.stage_output("linear_probe"),
        metrics=layout.stage_output("linear_probe", ".metrics.jsonl"),
    params:
        **layout.stage_params("linear_probe"),
        layer_t=layout.fixed_layer_t,
        steps=layout.evaluation_steps,
    resources:
        gpu=layout.evaluation_gpus,
        gpu_slot=layout.evaluation_gpu_slot,
    log:
        "logs/{dataset}/{run}/linear_probe_epoch{epoch}.log",
    benchmark:
        "logs/{dataset}/{run}/linear_probe_epoch{epoch}.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/linear_probe.py"


# Stages with a runner (ddae.pipeline.stages) need no rule of their own: one generic rule each,
# named as the stage, measuring one checkpoint at the run's (layer, t) (ddae.stage_runner).
for _stage in layout.runner_stages():

    rule:
        name:
            _stage.name
        input:
            unpack(layout.source_files),
            checkpoint=layout.checkpoint_input,
            choice=layout.layer_t_choice,
        output:
            layout.stage_output(_stage.name),
        params:
            stage=_stage.name,
            **layout.stage_params(_stage.name),
            layer_t=layout.fixed_layer_t,
            steps=layout.evaluation_steps,
        resources:
            gpu=layout.evaluation_gpus,
            gpu_slot=layout.evaluation_gpu_slot,
        log:
            f"logs/{{dataset}}/{{run}}/{_stage.name}_epoch{{epoch}}.log",
        benchmark:
            f"logs/{{dataset}}/{{run}}/{_stage.name}_epoch{{epoch}}.benchmark.tsv",
        conda:
            "../../envs/ddae.yaml"
        script:
            "../scripts/stage.py"
