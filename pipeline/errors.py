"""The one error the command line turns into exit code 2 without a traceback.

Modules at every layer raise :class:`UserError` (or a subclass defined where it is raised) for
what the user can fix; ``pipeline.cli`` catches it. Nothing here imports anything of xmodal.
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user can fix (bad argument, missing checkpoint, failed gate): printed on one
    line naming the culprit, exit code 2."""
