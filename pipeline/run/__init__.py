"""Running stages: the run config (``config``), manifest ingest (``ingest``), the in-process
runner (``local_runner``), the Ray Data runner (``ray_runner``, the only module of xmodal that
imports Ray) and the code version stamped on every build (``versioning``).

May import: ``schemas``, ``access``, ``stages``, ``pipeline.errors``.
"""
