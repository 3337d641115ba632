# Datasets: checksummed downloads (local rules, the only rules that touch the network) and a
# one-off conversion into the uniform format (uint8 images + int labels per split).


localrules:
    download_cifar10,
    download_tiny_imagenet,


rule download_cifar10:
    output:
        directory(DOWNLOADED_SOURCES["cifar10"]),
    log:
        "logs/download_cifar10.log",
    benchmark:
        "logs/download_cifar10.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/download_cifar10.py"


rule download_tiny_imagenet:
    output:
        DOWNLOADED_SOURCES["tiny_imagenet"],
    log:
        "logs/download_tiny_imagenet.log",
    benchmark:
        "logs/download_tiny_imagenet.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/download_tiny_imagenet.py"


rule prepare_dataset:
    input:
        source=dataset_source,
    output:
        train="resources/data/{dataset}/train.npz",
        test="resources/data/{dataset}/test.npz",
    params:
        resolution=lambda wildcards: DATASETS[wildcards.dataset]["resolution"],
    log:
        "logs/prepare_{dataset}.log",
    benchmark:
        "logs/prepare_{dataset}.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/prepare_dataset.py"
