"""Protocol v1 routes under ``/api/downstream/v1`` (docs/protocol-v1.md): shapes, statuses and
messages as the ``downstream-farmer`` 0.1.8 client expects them; errors are the original envelope
``{"status": "error", "message": ...}``. Each request is one service call, one transaction."""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from downstream_tx.core.tokens import Token
from downstream_tx.http.bodies import INLINE_PARSE, is_json, read_body
from downstream_tx.http.clients import client_ip
from downstream_tx.http.errors import json_body
from downstream_tx.http.facts import arrived_at, set_outcome
from downstream_tx.http.routing import app, report_outcome
from downstream_tx.v1.wire import MSG_POST_JSON, MSG_POST_REQUIRED, answer_entries, challenge_entries, v1_error
from downstream_tx.wire import DEFAULT_CHUNK_SIZE
from downstream_tx.wire import V1_PREFIX as PREFIX

#: routes whose bodies are batches of up to 5,000 items (their cap is ``max_batch_body_size``)
BATCH_PATHS = (PREFIX + "/challenge/", PREFIX + "/answer/")
RATE_LIMITED = {"status": "error", "message": "Too many token requests, try again in {retry} seconds."}


class V1Routes:
    """Mixed into :class:`~downstream_tx.http.server.DownstreamServer` (its ``v1``, ``config``,
    ``token_limit``, ``batch_body_size`` and ``bodies``). A route with a body
    looks its token up first, then reads the body through ``bodies`` (http/bodies.py)."""

    @app.route(PREFIX + "/", methods=["GET"], endpoint="v1_index")
    def v1_index(self, request: IRequest):
        return json_body(request, {"msg": "ok"})

    @app.route(PREFIX + "/new/<address>", methods=["GET", "POST"], endpoint="v1_new")
    async def v1_new(self, request: IRequest, address: str):
        ip = client_ip(request, self.config)
        await self.token_limit.check(ip, RATE_LIMITED)
        message = signature = None
        if self.config.require_signature:
            if request.method != b"POST":
                raise v1_error(MSG_POST_REQUIRED)
            body = self.bodies.object(read_body(request, INLINE_PARSE + 1)) if is_json(request) else None
            if not (isinstance(body, dict) and "signature" in body and "message" in body):
                raise v1_error(MSG_POST_JSON)
            message, signature = body["message"], body["signature"]
            if not isinstance(message, str) or not isinstance(signature, str):
                raise v1_error(MSG_POST_JSON)
        return json_body(request, await self.v1.new_token(address, ip, message, signature))

    @app.route(PREFIX + "/heartbeat/<v1token(404):token>", methods=["GET"], endpoint="v1_heartbeat")
    async def v1_heartbeat(self, request: IRequest, token: Token):
        return json_body(request, await self.v1.heartbeat(token))

    @app.route(PREFIX + "/chunk/<v1token:token>", methods=["GET"], endpoint="v1_chunk")
    @app.route(PREFIX + "/chunk/<v1token:token>/<unsigned:size>", methods=["GET"], endpoint="v1_chunk_size")
    async def v1_chunk(self, request: IRequest, token: Token, size: int | None = None):
        requested = DEFAULT_CHUNK_SIZE if size is None else size
        chunks = await self.v1.chunks(token, client_ip(request, self.config), requested)
        return json_body(request, {"chunks": chunks})

    @app.route(PREFIX + "/challenge/<v1token:token>", methods=["GET", "POST"], endpoint="v1_challenge")
    @app.route(PREFIX + "/challenge/<v1token:token>/<unsigned:contract_id>", methods=["GET", "POST"],
               endpoint="v1_challenge_one")
    async def v1_challenge(self, request: IRequest, token: Token, contract_id: int | None = None):
        if contract_id is not None:
            items: list[Any] | None = [contract_id]
        elif request.method == b"POST":
            await self.v1.check_token_before_body(token)  # an unknown token costs no body parse
            items = await self.bodies.items(request, "hashes", self.batch_body_size)
        else:
            items = None  # GET: every active contract of the token
        return json_body(request, {"challenges": challenge_entries(await self.v1.challenges(token, items))})

    @app.route(PREFIX + "/answer/<v1token:token>", methods=["POST"], endpoint="v1_answer")
    @app.route(PREFIX + "/answer/<v1token:token>/<unsigned:contract_id>", methods=["POST"], endpoint="v1_answer_one")
    async def v1_answer(self, request: IRequest, token: Token, contract_id: int | None = None):
        await self.v1.check_token_before_body(token)  # an unknown token costs no body parse
        if contract_id is None:
            items = await self.bodies.items(request, "proofs", self.batch_body_size, inflate_gzip=True)
        else:
            body = self.bodies.object(read_body(request, INLINE_PARSE + 1), inflate_gzip=True)
            items = [{"file_hash": contract_id, "proof": body.get("proof")}] if isinstance(body, dict) else []
        report = await self.v1.answer(token, client_ip(request, self.config), items, arrived_at(request, self.clock))
        set_outcome(request, report_outcome(report))  # the request log tells passes from fails
        return json_body(request, {"report": answer_entries(report)})

    @app.route(PREFIX + "/tags/<v1token(404):token>", methods=["GET"], endpoint="v1_tags")
    async def v1_tags(self, request: IRequest, token: Token):
        return json_body(request, {"tags": await self.v1.tags(token)})
