"""``python -m tests.mutation MODULE...``: see tests/mutation/__init__.py and docs/testing.md."""

from . import entry

entry()
