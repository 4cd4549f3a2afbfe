"""Cross-modal metrics: array-level retrieval and distribution summaries (``retrieval``),
caption entailment conflicts (``entailment``) and the metrics of a release's rows (``release``).

May import: ``schemas``, ``stages`` (the object lexicon), ``pipeline.run`` (the metrics config).
"""
