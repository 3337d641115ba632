# Datasets: checksummed downloads (local rules, the only rules that touch the network) and a
# one-off conversion into the uniform format (uint8 images + int labels per split). Every
# dataset, its URL, checksum and file name come from ddae.datasets.registry.

localrules:
    download_dataset,


rule download_dataset:
    output:
        "resources/downloads/{dataset}/{file}",
    wildcard_constraints:
        **layout.download_constraints(),
    params:
        url=lambda wildcards: layout.registered_download(wildcards).url,
        checksum=lambda wildcards: layout.registered_download(wildcards).checksum,
    log:
        "logs/download_{dataset}_{file}.log",
    benchmark:
        "logs/download_{dataset}_{file}.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/download.py"


rule prepare_dataset:
    input:
        source=layout.dataset_source,
    output:
        train="resources/data/{dataset}/train.npz",
        test="resources/data/{dataset}/test.npz",
    params:
        resolution=lambda wildcards: layout.datasets[wildcards.dataset]["resolution"],
    log:
        "logs/prepare_{dataset}.log",
    benchmark:
        "logs/prepare_{dataset}.benchmark.tsv",
    conda:
        "../../envs/ddae.yaml"
    script:
        "../scripts/prepare_dataset.py"
