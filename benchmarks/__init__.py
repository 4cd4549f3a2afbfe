"""Speed and memory benchmarks. Each ``bench_*.py`` runs as ``python -m benchmarks.bench_x``,
prints its own table and reports its headline figures with :func:`benchmarks._result.report`;
``python -m benchmarks`` (``make bench``) runs them one process each (some pin a core) and prints
a summary. Figures are ratios or rates measured within one run."""
