"""The rules, as pure decisions: scores, standing, containment, vetting, verdicts and the
forgiveness window (docs/operations.md, "Reputation"; docs/protocol-v0.md, "Late answers").

Every function here takes what it decides on — rows as plain values, the clock's time, the node's
:class:`~downstream_tx.domain.rules.Rules` — and returns a decision (a score update, a status
change, a containment step, a verdict); the stores in ``db/`` read the rows, call the rule and write
what it decided in the same transaction. This package imports no framework (Twisted, SQL drivers,
HTTP) and no other layer of the node: its tests need no database and no reactor.
"""
