"""Human sampling review of a published release: a seeded stratified sample read from the
release's shards (``release_rows``, ``sample``), an offline review page with the media beside it
(``media``, ``cards``, ``page``, ``script``), verdicts from the page (``verdicts``), a local
server that receives them (``serve``), and the merge that records ``review_status`` in a review
table beside the release and measures how far the reviewers agree with each check
(``agreement``, ``merge``, ``gates``). ``cli`` adds ``xmodal review``.

May import: ``schemas``, ``access``, ``stages``, ``pipeline.errors``, ``pipeline.run``,
``pipeline.metrics``, ``pipeline.release``. Never Ray, never a release's shards for writing.
"""
