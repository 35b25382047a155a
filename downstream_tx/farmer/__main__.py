"""``python -m downstream_tx.farmer``: the same as the ``downstream-farmer`` command."""

from .main import entry

entry()
