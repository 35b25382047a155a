"""The seed's routes (docs/protocol-v0.md): tokens, chunk contracts, due challenges, answers, and
downloads of stored chunks. Every error body is ``{"status": <code>, "message": <words>}``."""

from __future__ import annotations

import math
import os

from twisted.web.iweb import IRequest

from downstream_tx.core.tokens import Token
from downstream_tx.http.clients import client_ip
from downstream_tx.http.download import ChunkDownload, parse_range
from downstream_tx.http.errors import error_body, json_body
from downstream_tx.http.facts import arrived_at, set_outcome
from downstream_tx.http.query import int_arg
from downstream_tx.http.routing import app, check_address
from downstream_tx.v0.capability import PARAMETER
from downstream_tx.v0.farming import DUE_PAGE, MAX_DUE_PAGE, AnswerOutcome, no_download
from downstream_tx.v0.hashes import FileHash, Malformed, Response

RATE_LIMITED = error_body("rate_limited", "too many token requests from this address, try again in {retry} seconds")
#: the body of each verdict of an answer: a late pass is a pass to the 2014 client, "late" for those who look
OUTCOME_BODY = {AnswerOutcome.PASS: {"status": "pass"}, AnswerOutcome.LATE_PASS: {"status": "pass", "late": True},
                AnswerOutcome.FAIL: {"status": "fail"}}


def seconds_left(deadline: float, now: float) -> int:
    """Whole seconds until ``deadline``, rounded up (a fresh challenge shows its full interval),
    never negative."""
    return max(0, math.ceil(deadline - now))


class V0Routes:
    """Mixed into :class:`~downstream_tx.http.server.DownstreamServer` (its ``v0``, ``config``,
    ``clock``, ``token_limit`` and ``base_url``)."""

    @app.route("/api/downstream/new/<addr>", methods=["GET"])
    async def new_token(self, request: IRequest, addr: str):
        ip = client_ip(request, self.config)
        await self.token_limit.check(ip, RATE_LIMITED)
        token = await self.v0.create_token(check_address(addr), ip=ip)
        return json_body(request, {"token": token})

    @app.route("/api/downstream/chunk/<token:token>", methods=["GET"])
    async def chunk(self, request: IRequest, token: Token):
        a = await self.v0.get_chunk(token, client_ip(request, self.config))
        return json_body(request, {
            "url": f"{self.base_url}/api/download/{a.file_hash}?{PARAMETER}={a.capability}", "file_hash": a.file_hash,
            "challenge": a.challenge.hex(), "interval": a.interval, "size": a.size,
            "due": seconds_left(a.deadline, self.clock.seconds()),
        })

    @app.route("/api/downstream/remove/<token:token>/<hash:file_hash>", methods=["GET", "DELETE"])
    async def remove(self, request: IRequest, token: Token, file_hash: FileHash):
        await self.v0.end_contract(token, file_hash)
        return json_body(request, {"status": "ok"})

    @app.route("/api/downstream/due/<token:token>", methods=["GET"])
    async def due(self, request: IRequest, token: Token):
        limit = int_arg(request, "limit", DUE_PAGE, 1, DUE_PAGE)
        page = int_arg(request, "page", 0, 0, MAX_DUE_PAGE)
        every, outstanding = await self.v0.due(token, limit, page)
        now = self.clock.seconds()
        return json_body(request, {
            "all_contracts": [{"hash": r["file_hash"]} for r in every],
            "due_contracts": [{"hash": r["file_hash"], "challenge": r["challenge"].hex(),
                               "due": seconds_left(r["deadline"], now)} for r in outstanding],
        })

    @app.route("/api/downstream/challenge/<token:token>/<hash:file_hash>/<response:hash_response>",
               methods=["GET"])
    async def challenge(self, request: IRequest, token: Token, file_hash: FileHash,
                        hash_response: Response | Malformed):
        verdict = await self.v0.answer(token, file_hash, hash_response, arrived_at(request, self.clock))
        set_outcome(request, verdict.value)  # the request log tells a pass from a fail
        return json_body(request, OUTCOME_BODY[verdict])

    @app.route("/api/download/<hash:file_hash>", methods=["GET", "HEAD"])
    async def download(self, request: IRequest, file_hash: FileHash):
        """The chunk for the holder of a contract's capability (``?cap=``, docs/protocol-v0.md
        "Downloads"); a HEAD is checked the same way but neither counted nor starts the window."""
        values = (request.args or {}).get(PARAMETER.encode())
        # the last value, as the dashboard's parameters; not ASCII: no capability can match it
        capability = None if not values else values[-1].decode("ascii", "replace")
        wanted = request.getHeader(b"range")
        path, size = await self.v0.download(  # counted: a GET that gets bytes (not a HEAD, not a 416)
            file_hash, capability, lambda size: request.method != b"HEAD" and parse_range(wanted, size) is not False)
        if not os.path.isfile(path):
            raise no_download()
        return ChunkDownload(path, size, file_hash.hex)
