"""Linear probing of DDAE features: the (layer, t) grid search and the final linear probe.

The package's modules (this file imports none of them):

* `ddae.probing.bank`: many linear probes trained jointly on cached features (`ProbeBank`,
  `fit_cached_probes`), with the two options below;
* `ddae.probing.grid_search`: the grid over (layer, t) of one checkpoint (Appendix B, Figure 2)
  and its files (grid CSV, choice JSON);
* `ddae.probing.pixel_probe`: the same probes on raw pixels (the miniature's reference point);
* `ddae.probing.linear_probe`: the final probe with the frozen network in the loop (Table 6,
  Tables 2–4).

Their configs are `ddae.settings.probes`; the (layer, t) pair a grid chose is read by
`ddae.layer_choice`, which fine-tuning, alignment and the noisy stage use without this package.

Paper Sec. 3.2 / Figure 2 / Appendix B: a linear classifier is trained on the frozen, pooled
output of one decoder block at one noise level; the grid over (layer, t) picks the pair used for
linear evaluation (Tables 2–4) and fine-tuning (Table 9 lists the choices).

Protocol facts from the official code (github.com/FutureXiang/ddae), followed here:

* Head: a plain ``nn.Linear(D, num_classes)`` on the un-normalised pooled features — no
  BatchNorm, no LayerNorm (``linear.py`` ``ClassifierDict``; ``DiT/linear.py`` ``Classifier``
  has its LayerNorm commented out). Initialisation is ``nn.Linear``'s: weight and bias
  U(−1/√D, 1/√D).
* Optimiser: ``torch.optim.Adam(lr=base_lr)``, no weight decay, cross-entropy loss; the config's
  ``linear.lrate`` = 1e-3 at ``batch_size`` 128 *per GPU*, and ``linear.py`` multiplies the lr by
  the number of GPUs (``base_lr *= DDP_multiplier``). Table 6: 4 GPUs, i.e. a global batch of
  512 at lr 4e-3. Here (`ddae.learning_rate`) lr · batch_size / lr_reference_batch with ``lr``
  1e-3 at ``lr_reference_batch`` 128 (the same rule for any global batch).
* Schedule: ``CosineAnnealingLR(optimizer, T_max=epochs)`` stepped once per *epoch*:
  lr_e = peak · (1 + cos(π e / E)) / 2 for e = 0..E−1 (η_min = 0; the last epoch is not at 0).
* Data: ``RandomHorizontalFlip()`` + ``RandomCrop(32, 4)`` on the training split, fresh noise
  (``torch.randn_like``) in every batch, test split un-augmented; accuracy measured once after
  the last epoch. The last partial batch is kept (DataLoader default ``drop_last=False``).
* Grid (``linear.py --grid``): all (t, block) probes are trained side by side on the same
  batches, one feature pass per t and batch serving every block. Appendix B: 10 epochs per probe.
* Epochs of the final probe (Table 6): CIFAR-10 DDPM 10 / EDM 15 / DiT 30; Tiny-ImageNet DDPM 20 /
  EDM 30 / DiT 30 (the official configs/DDPM_ddpm.yaml says 15 for CIFAR-10 DDPM).

What differs, and why:

* `grid_search.grid_search` trains on features cached by `ddae.features` (K augmented views,
  each image using one randomly chosen view per epoch, like the official DiT
  ``LatentCodeDataset``), not on features recomputed every epoch; every (layer, t) probe of a
  checkpoint is trained jointly by batched tensor ops (`bank.ProbeBank`), bit-for-bit
  independent in its math of the others.
* All randomness is seeded (per-image noise and augmentation, see `ddae.features`; batch order
  from `ddae.batching.epoch_permutation`; per-probe initialisation from (seed, t, layer)).

Two options the paper does not use, both off by default, for the CPU miniature (tests/smoke):

* ``standardize``: each feature column is standardised with the mean and variance of the
  probe's training features, (x − μ)/√(σ² + 1e-5) — a BatchNorm1d without affine parameters in
  evaluation mode, the normalisation MAE-style linear probes put before the head. The paper
  uses none ("we do not use additional normalization layers before linear classifiers since we
  find it also works well", Appendix A); on features of small spread, as a briefly
  trained tiny network has, an un-normalised probe does not converge in a few epochs.
* ``labels_per_class``: the probe sees only k labelled training images per class (a seeded
  choice, the same for every probe of a config): with few labels the quality of the
  representation shows, where with all labels even raw digit pixels are linearly separable.
* `pixel_probe.pixel_probe`: the same probe protocol on raw pixels (a reference point, like the
  paper's supervised baseline, for the miniature's findings in `ddae.findings`).
"""
