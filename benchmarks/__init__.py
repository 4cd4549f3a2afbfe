"""Speed and memory benchmarks. Each ``bench_*.py`` has ``main()``, prints its own table and
returns rows ``{"benchmark", "metric", "value", "target"}`` for the summary of ``make bench``.
Every figure is a ratio measured within one run, so machines of different speed compare."""
