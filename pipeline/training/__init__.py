"""Training on a release: the checked loader (``loader``), cross-modal mixup and MixGen
(``mixup``), consistency losses (``losses``) and modality dropout (``transforms``).

Nothing is imported here: Ray workers import ``release_shards`` without pulling in torch.
"""
