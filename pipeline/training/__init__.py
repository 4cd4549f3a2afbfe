"""Training on a release: the checked loader (``loader``), cross-modal mixup and MixGen
(``mixup``), consistency losses (``losses``), modality dropout (``transforms``) and
mixtures of released pools to target shares (``mixing``; the ``xmodal mix`` command in
``mix_command``).

May import: ``schemas``, ``access``, ``stages``, ``pipeline.errors``, ``pipeline.release``.

Nothing is imported here: Ray workers import ``release_shards`` without pulling in torch.
"""
