"""What a killed run leaves beside its version, removed by the next run of that version.

A run stages its rows in ``<root>/<dataset>/.staging-<version>-<8 hex>/`` (``pipeline.build``)
and builds a local release in ``<root>/<dataset>/.<version>.tmp-<8 hex>/``; when it commits
over a published version, that one is renamed to ``.<version>.old-<8 hex>`` and deleted. A run
killed in between leaves them there for good. :func:`remove_leftovers` removes exactly those
names for one version, on disk or S3, and nothing else: not another version's (the names are
matched whole, so ``v1`` never takes ``v1.1``'s), not a nightly's ``.build-<version>`` (which a
resumed night needs), not ``latest`` or ``_failed``. An ``.old`` folder goes only while the
version itself is in place (with its ``manifest.json``): otherwise it is the last published copy.

It assumes what publishing assumes already: one run of a dataset's version at a time (nightly
builds hold the version's lock).
"""

from __future__ import annotations

import logging
import re

import pyarrow.fs as pafs

from access.io import filesystem_for

log = logging.getLogger(__name__)


def leftover_pattern(version: str, *, old: bool) -> re.Pattern[str]:
    v, kinds = re.escape(version), "tmp|old" if old else "tmp"
    return re.compile(rf"^(?:\.staging-{v}-[0-9a-f]{{8}}|\.{v}\.(?:{kinds})-[0-9a-f]{{8}})$")


def remove_leftovers(root: str, dataset: str, version: str) -> list[str]:
    """Remove the staging and build folders a killed run of ``dataset``/``version`` left under
    ``root`` (a path or ``s3://`` prefix); return the names removed."""
    fs, base = filesystem_for(f"{root.rstrip('/')}/{dataset}")
    try:
        entries = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    except OSError as err:
        log.warning("cannot list %s for leftovers: %s", base, err)
        return []
    published = fs.get_file_info(f"{base}/{version}/manifest.json").type == pafs.FileType.File
    pattern = leftover_pattern(version, old=published)
    removed = []
    for entry in entries:
        if entry.type == pafs.FileType.Directory and pattern.match(entry.base_name):
            fs.delete_dir(entry.path)
            removed.append(entry.base_name)
    if removed:
        log.info("removed what a killed run of %s/%s left: %s", dataset, version, ", ".join(sorted(removed)))
    return sorted(removed)
