"""The demo models xmodal trains on its own sample world and ships under ``models/``:
for the CLIP, its training data and vocabulary (``clip_data``), training (``clip_train``) and
evaluation with the model card (``clip_eval``); the same three for the CLAP (``clap_*``); the
contrastive loss both train with (``losses``).

May import: ``schemas``, ``access``, ``stages``, ``pipeline.errors``, ``pipeline.world``.
"""
