"""ChatService over gRPC for internal clients: the same orchestrator as REST."""

from __future__ import annotations

import time

from toolwire.errors import RequestError, abort_with
from toolwire.grpc_gen.chat.v1 import chat_pb2_grpc

from . import request_log
from .auth import Auth
from .chat_render import chat_chunks, chat_completion
from .orchestrator import Orchestrator, new_request_id


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    def __init__(self, orchestrator: Orchestrator, auth: Auth):
        self.orch = orchestrator
        self.auth = auth

    async def _check(self, context, rid, request, started, stream) -> None:
        """Refuse a missing or wrong key: counted and logged as REST logs its refusals."""
        md = dict(context.invocation_metadata() or ())
        err = self.auth.check(md.get("authorization"))
        if err:
            self._done(rid, request, err.status, err.code, started, None, stream)
            await abort_with(context, err)

    async def CreateChatCompletion(self, request, context):
        rid, started = new_request_id(), time.perf_counter()
        await self._check(context, rid, request, started, False)
        try:
            run = await self.orch.open(request, rid)
            result = await chat_completion(run)
        except RequestError as e:
            self._done(rid, request, e.status, e.code, started, None, False)
            await abort_with(context, e)
        self._done(rid, request, 200, None, started, run, False)
        return result

    def _done(self, rid, request, status, code, started, run, stream) -> None:
        self.orch.metrics.count("grpc", status, code)
        request_log.write(
            request_id=rid,
            api="grpc",
            model=request.model,
            status=status,
            code=code,
            stream=stream,
            started=started,
            run=run,
        )

    async def StreamChatCompletion(self, request, context):
        rid, started, run = new_request_id(), time.perf_counter(), None
        await self._check(context, rid, request, started, True)
        try:
            run = await self.orch.open(request, rid)
            async for chunk in chat_chunks(run):
                yield chunk
        except RequestError as e:
            self._done(rid, request, e.status, e.code, started, run, True)
            await abort_with(context, e)
        self._done(rid, request, 200, None, started, run, True)
