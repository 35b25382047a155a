"""The farmer's HTTP client: treq over one connection pool (kept-alive connections to each node),
TLS certificates verified unless ``--ssl-no-verify``."""

from __future__ import annotations

from typing import Any

from treq.client import HTTPClient
from twisted.internet.ssl import CertificateOptions
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer


@implementer(IPolicyForHTTPS)
class NoVerification:
    """Accept any certificate (``--ssl-no-verify``): the connection is encrypted, not authenticated."""

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return CertificateOptions(verify=False)


def http_client(reactor: Any, verify: bool = True, per_node: int = 4) -> HTTPClient:
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = per_node
    pool.retryAutomatically = False  # a POST of answers is never sent twice behind the farmer's back
    policy = BrowserLikePolicyForHTTPS() if verify else NoVerification()
    return HTTPClient(Agent(reactor, contextFactory=policy, pool=pool))
