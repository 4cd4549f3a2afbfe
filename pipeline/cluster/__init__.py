"""Running on a cluster and on a schedule: job submission with token auth (``submit``), nightly
dated builds with resume and retention (``nightly``) and build locks (``locks``).

May import every package of ``pipeline`` except ``cli`` and ``job_entry``.
"""
