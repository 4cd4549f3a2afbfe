"""Orchestration: config, runners, CLI, I/O, shard writers, release, report, jobs, models."""
