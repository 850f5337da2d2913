"""Where the curated solutions shipped with this package live.

A wheel carries them inside the package (``bundled/``); a source checkout
or an editable install reads the repository's own ``solutions/`` folder.
"""

from __future__ import annotations

from pathlib import Path


def bundled_solutions_path() -> Path:
    """The curated folder (the directory holding ``solutions/``)."""
    package = Path(__file__).resolve().parent
    installed = package / "bundled"
    if (installed / "solutions").is_dir():
        return installed
    return package.parent
