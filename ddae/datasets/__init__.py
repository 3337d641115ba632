"""Datasets of paper Sec. 4 (CIFAR-10, Tiny-ImageNet) and the bundled toy digits, as the pipeline
reads them: a registry of what each dataset is and where it comes from, one reader per source
format, and the uniform file every stage reads.

* `ddae.datasets.registry`: one entry per dataset (its reader, its download — URL, checksum, file
  name — classes and resolution); the config schema's list of datasets, the download rule and
  the conversion come from it. A new dataset is a reader module, one entry there and its
  config.yaml block. Pure Python (the Snakefile imports it).
* `ddae.datasets.cifar10`, `ddae.datasets.tiny_imagenet`, `ddae.datasets.digits`: the readers.
* `ddae.datasets.format`: the uniform ``.npz`` format (`ImageDataset`) and `DatasetError`.
* `ddae.datasets.prepare`: the conversion into that format (rule ``prepare_dataset``).

The augmentations used around the datasets live in `ddae.batching` (probing, fine-tuning) and
`ddae.augment` (EDM pre-training).
"""
