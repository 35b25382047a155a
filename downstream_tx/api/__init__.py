"""HTTP: Klein apps that parse and validate requests, call the node, and render JSON.

Nothing outside this package knows HTTP. :func:`make_resource` builds the whole tree.
"""

from __future__ import annotations

from typing import Any

from klein import Klein

from downstream_tx.api import common, ops, root, status, v0, v1
from downstream_tx.config import Config
from downstream_tx.node import Node

#: modules with a ``register(app, ctx)`` function, in routing order
ROUTE_MODULES = [root, v0, v1, status, ops]


def make_app(node: Node, config: Config, extra: dict[str, Any] | None = None) -> Klein:
    app: Klein = common.RoutedKlein()
    ctx = common.Context(node=node, config=config, **(extra or {}))
    common.register_error_handlers(app, ctx)
    for module in ROUTE_MODULES:
        module.register(app, ctx)
    return app


def make_resource(node: Node, config: Config, extra: dict[str, Any] | None = None):
    return make_app(node, config, extra).resource()
