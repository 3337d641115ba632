# Why the features are good (paper Sec. 3.3 and 4.1.3): alignment and uniformity of every
# decoder layer over the checkpoints (Eq. 3-4, Figure 3), and noise-conditional classifiers:
# an MLP head on frozen DDAE features against noise-conditional WideResNets (Eq. 5, Figure 6).


rule align_uniform:
    input:
        checkpoint=layout.checkpoint_input,
        train=layout.train_split,
        choice=layout.layer_t_choice_final,
    output:
        layout.stage_output("align_uniform"),
    params:
        **layout.stage_params("align_uniform"),
        layer_t=layout.fixed_layer_t,
        steps=layout.evaluation_steps,
    resources:
        gpu=layout.evaluation_gpus,
        gpu_slot=layout.evaluation_gpu_slot,
    log:
        "logs/{dataset}/{run}/align_uniform_epoch{epoch}.log",
    benchmark:
        "logs/{dataset}/{run}/align_uniform_epoch{epoch}.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/align_uniform.py"


rule noisy_classifier:
    input:
        checkpoint=layout.checkpoint_input,
        train=layout.train_split,
        test=layout.test_split,
        choice=layout.layer_t_choice,
    output:
        layout.stage_output("noisy"),
    params:
        **layout.stage_params("noisy"),
        layer_t=layout.fixed_layer_t,
        steps=layout.evaluation_steps,
        metrics=layout.metrics_beside_csv,
        state_dir=layout.partial_state("noisy_epoch{epoch}"),
    resources:
        gpu=layout.evaluation_gpus,
        gpu_slot=layout.evaluation_gpu_slot,
    log:
        "logs/{dataset}/{run}/noisy_classifier_epoch{epoch}.log",
    benchmark:
        "logs/{dataset}/{run}/noisy_classifier_epoch{epoch}.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/noisy_classifier.py"


rule noisy_wrn:
    input:
        train=layout.train_split,
        test=layout.test_split,
    output:
        "results/{dataset}/baselines/noisy_wrn_{perturbation}.csv",
    params:
        perturbation=lambda wildcards: wildcards.perturbation,
        network=lambda wildcards: layout.noisy_baseline(wildcards)["network"],
        framework=lambda wildcards: layout.noisy_baseline(wildcards)[wildcards.perturbation],
        training=lambda wildcards: layout.noisy_baseline(wildcards)["training"],
        metrics=layout.metrics_beside_csv,
        state_dir="results/{dataset}/baselines/partial/noisy_wrn_{perturbation}",
    wildcard_constraints:
        perturbation="vp|ve",
    resources:
        gpu=lambda wildcards: layout.noisy_baseline(wildcards)["gpus"],
        gpu_slot=lambda wildcards: min(layout.noisy_baseline(wildcards)["gpus"], 1),
    log:
        "logs/{dataset}/noisy_wrn_{perturbation}.log",
    benchmark:
        "logs/{dataset}/noisy_wrn_{perturbation}.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/noisy_wrn.py"
