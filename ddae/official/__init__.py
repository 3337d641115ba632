"""Official pre-trained checkpoints, downloaded and converted into ddae checkpoints (paper
Appendix A: "For CIFAR-10, we retrieve official checkpoints from their codebases"; DiT-XL/2 and
the Stable Diffusion VAE for the transfer rows of Tables 3 and 4).

Each import writes a ``ddae-checkpoint/2`` file (`ddae.checkpoints`) whose run config rebuilds
network and framework by itself, so every later stage (FID, features, probes, fine-tuning) reads
an imported model exactly like one trained here. The payload's ``source`` records provenance:
the URL, each source file's sha256 and size, and the importer. The package reads in the order
of the method:

* `ddae.official.sources`: where each checkpoint is published (URL, checksum, the file or
  folder name it is saved under), `download_official`, the download localrules' entry, and
  `verify_official`, which checks a download against its published checksum at every import.
* `ddae.official.conversion`: what every importer shares: the check against the run's config
  (`check_expected`), the refusal of oversized specs, and writing the ddae checkpoint.
* `ddae.official.bounds`: limits on the expanded size of nested data read from a file (a list
  referenced twice at every level of 40 is 2^40 nodes to anything that walks it as a tree),
  checked before anything walks, converts or prints it.
* One importer per format (`ddae.official.importers.import_official` dispatches by kind):

  - `ddae.official.ddpm` — DDPM (Ho et al.): the diffusers folder google/ddpm-cifar10-32 →
    ``ddpm_unet`` under the DDPM framework. The folder's config must equal our `DDPMUNet` spec
    key by key (else the differing key is named); a ``scheduler_config.json`` must describe
    T = 1000 linear β 1e-4..0.02.
  - `ddae.official.edm` — EDM (Karras et al.): ``edm-cifar10-32x32-uncond-vp.pkl`` →
    ``ddpmpp`` under the EDM framework, read by `ddae.official.edm_pickle` (allow-list
    unpickler; no embedded source runs). The SongUNet's ``_init_kwargs`` become our config
    (unsupported keys/values are named) and the ``ema`` network's state loads with
    ``strict=True``.
  - `ddae.official.dit` — DiT-XL/2-256 (Peebles & Xie): the original state dict → ``dit``
    (`ddae.networks.dit`, original parameter names, strict load) under DDPM with T = 1000
    linear β, on VAE latents.

* `ddae.official.stand_ins`: randomly initialised stand-ins in the same formats for the CPU
  smoke run (no downloads).

The SD VAE ft-MSE is not converted: `ddae.latents` loads its diffusers folder directly.
This module holds only the shared error, so that the Snakefile can import the light
`ddae.official.sources` without torch.
"""


class OfficialImportError(ValueError):
    """An official checkpoint does not match what the paper used (the message names the key)."""
