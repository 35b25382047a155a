"""Loaded at interpreter start (a .pth line written by run.py) in the throw-away venv that runs
the published downstream-farmer 0.1.8.  Our code; it changes nothing in the client itself.

* ``time.clock`` was removed in Python 3.8 and the client calls it to time its work (on Python 2,
  Linux, it was process CPU time).
* The client's log lines get a timestamp and thread name (format only).
* With ``DTX_REAL_LIBS=1`` the original storj-heartbeat 0.1.10 / RandomIO 0.2.1 run on
  pycryptodome: pycrypto accepted ``str`` for IVs and plaintexts (``"\\0" * 16``), pycryptodome
  wants bytes, so ``AES.new`` objects encode ``str`` arguments as latin-1; and
  ``heartbeat.Swizzle`` (a C++/Crypto++ extension we do not build) is a stub whose use fails.
"""

import logging
import os
import sys
import time

if not hasattr(time, "clock"):
    time.clock = time.process_time

# The client's log file has no timestamps (logging.basicConfig(filename=..., level=DEBUG)); add them
# so the run can be lined up with the node's log.  Only the line format changes.
_basic_config = logging.basicConfig


def _basic_config_with_time(**kwargs):
    kwargs.setdefault("format", "%(asctime)s.%(msecs)03d %(levelname)s:%(name)s:%(threadName)s:%(message)s")
    kwargs.setdefault("datefmt", "%H:%M:%S")
    return _basic_config(**kwargs)


logging.basicConfig = _basic_config_with_time


def _install_real_lib_adapters():
    import importlib.abc
    import importlib.util
    import types

    from Crypto.Cipher import AES

    def _b(x):
        return x.encode("latin-1") if isinstance(x, str) else x

    class _Cipher:
        def __init__(self, inner):
            self._inner = inner

        def encrypt(self, data):
            return self._inner.encrypt(_b(data))

        def decrypt(self, data):
            return self._inner.decrypt(_b(data))

        def __getattr__(self, name):
            return getattr(self._inner, name)

    _new = AES.new

    def new(key, mode, *args, **kwargs):
        args = tuple(_b(a) for a in args)
        kwargs = {k: _b(v) for k, v in kwargs.items()}
        return _Cipher(_new(_b(key), mode, *args, **kwargs))

    AES.new = new

    class _SwizzleStub:
        def __init__(self, *args, **kwargs):
            raise NotImplementedError("heartbeat.Swizzle (C++ extension) is not built here")

    class _SwizzleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, fullname, path, target=None):
            if fullname == "heartbeat.Swizzle":
                return importlib.util.spec_from_loader(fullname, self)
            return None

        def create_module(self, spec):
            module = types.ModuleType(spec.name)
            module.Swizzle = _SwizzleStub
            return module

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, _SwizzleFinder())


if os.environ.get("DTX_REAL_LIBS") == "1":
    _install_real_lib_adapters()
