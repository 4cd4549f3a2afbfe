"""Orchestration, in layers; a package imports only the ones listed before it:

- ``errors``: the user error the CLI turns into exit code 2;
- ``world``: the synthetic sample world;
- ``run``: config, ingest, the local and the Ray runner (the only module that knows Ray);
- ``metrics``: cross-modal metrics over a release's rows;
- ``release``: shards, lint, publish, versions, report, gates, the release writer;
- ``build``: one run of a config: the runner, then the release;
- ``demo_models``: training and evaluation of the demo models the project ships;
- ``training``: the training side (loader, mixup, losses, mixing);
- ``cluster``: job submission, nightly builds, build locks;
- ``cli`` and ``job_entry``: the command line on top.

``tests/test_layers.py`` walks the imports and fails on a cycle or an import upwards.
"""
