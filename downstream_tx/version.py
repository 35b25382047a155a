"""Which build of downstream-tx this is: the release (``downstream_tx.__version__``, changed at each
release) plus, for a build from a git checkout, the commit it was built from.

``full_version()`` is ``0.1.0`` for a build made without git, ``0.1.0+g063114e1a2b3`` for one made
from a checkout at that commit, and ``0.1.0+g063114e1a2b3.dirty`` when the checkout had changes
not committed (PEP 440 local version labels). The commit comes from, in order:

- the checkout the package runs from (a ``.git`` beside the package: an editable install, tests),
  asked at run time with ``git``;
- ``downstream_tx/_build.py``, written into the wheel by ``setup.py`` at build time (an install from
  a wheel has no ``.git``);
- nothing: the release alone.
"""

from __future__ import annotations

import functools
import os
import subprocess

#: the checkout this package would sit in, if it runs from one
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git_commit(root: str, timeout: float = 5.0) -> str | None:
    """``g<12 hex>`` (``.dirty`` appended when tracked files differ from the commit) of the checkout at
    ``root``, or None when ``root`` is no git checkout or git is missing."""
    if not os.path.exists(os.path.join(root, ".git")):
        return None
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                              text=True, timeout=timeout, env=env)
        if head.returncode != 0 or not head.stdout.strip():
            return None
        dirty = subprocess.run(["git", "-C", root, "diff", "--quiet", "HEAD", "--"], capture_output=True,
                               timeout=timeout, env=env).returncode == 1
    except (OSError, subprocess.SubprocessError):
        return None
    return f"g{head.stdout.strip()}" + (".dirty" if dirty else "")


def built_commit() -> str | None:
    """The commit ``setup.py`` wrote into the package when it was built, if any."""
    try:
        from downstream_tx import _build  # type: ignore[attr-defined]
    except ImportError:
        return None
    return getattr(_build, "COMMIT", None) or None


@functools.cache
def full_version() -> str:
    """The release and, when known, the commit: ``0.1.0+g063114e1a2b3`` (see the module's docstring)."""
    from downstream_tx import __version__

    commit = git_commit(_ROOT) or built_commit()
    return f"{__version__}+{commit}" if commit else __version__
