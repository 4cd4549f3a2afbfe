"""Releases: shard encoding (``shards``), the shard linter (``lint``), version pointers
(``versions``), S3 upload with resume (``publish``), the writer that builds and commits a release
(``writer``), the HTML report and its plots (``report``, ``plots``) and quality gates (``gates``).

May import: ``schemas``, ``access``, ``stages``, ``pipeline.errors``, ``pipeline.run``,
``pipeline.metrics``.
"""
