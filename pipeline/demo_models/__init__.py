"""The demo models xmodal trains on its own sample world and ships under ``models/``:
its training data and vocabulary (``clip_data``), training (``clip_train``) and evaluation with
the model card (``clip_eval``).

May import: ``schemas``, ``access``, ``stages``, ``pipeline.errors``, ``pipeline.world``.
"""
