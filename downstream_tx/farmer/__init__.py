"""downstream-farmer: the farmer's side of both protocols, on Twisted and treq (docs/farmer.md).

It stands beside the node and shares only the heartbeat maths (``downstream_tx.heartbeat``),
bitcoin signed messages (``downstream_tx.bitcoin``) and the wire formats (``downstream_tx.wire``);
``tests/test_architecture.py`` says so. Only ``main.py`` touches the global reactor.
"""
