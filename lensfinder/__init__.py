"""The ``lensfinder`` console command (:mod:`lensfinder.cli`) and its helpers.

The survey pipeline itself lives in :mod:`pipeline`, the models in :mod:`lensnet` and the
catalogue products in :mod:`catalogs`; this package only ties them to one command.
"""

from __future__ import annotations


def version() -> str:
    """The installed version, plus the git commit when run from a checkout."""
    from pipeline.version import code_version

    return code_version()
