"""Interchange: data in the formats people already hold, in and out of xmodal.

Importers turn COCO instances + captions, ODVG grounding JSONL, RefCOCO-style referring
expressions, LLaVA conversation JSON, WebDataset / img2dataset tars, videos with SRT or WebVTT
subtitles and MMC4 / OBELICS interleaved documents into a record-format-v1 manifest
(``xmodal import FORMAT SRC... --out MANIFEST.jsonl``); bad input becomes a reject line of that
manifest (``import_reject``: SCHEMA or MEDIA with a detail naming the record and the field),
never a crash. Exporters turn a published release into WebDataset tars, LLaVA conversation JSON
or a Hugging Face dataset card (``xmodal export FORMAT RELEASE --out DIR``).

May import ``schemas``, ``access``, ``stages`` (the lexicon), ``pipeline.errors``,
``pipeline.run`` (ingest's validation messages) and ``pipeline.release`` (the card and the
per-kind schemas); nothing above it, and not its peer ``pipeline.training``.
"""
