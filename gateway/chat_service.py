"""ChatService over gRPC for internal clients: the same orchestrator as REST."""

from __future__ import annotations

from toolwire.chat.v1 import chat_pb2_grpc
from toolwire.errors import RequestError, abort_with

from .auth import Auth
from .orchestrator import Orchestrator


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    def __init__(self, orchestrator: Orchestrator, auth: Auth):
        self.orch = orchestrator
        self.auth = auth

    async def _check(self, context) -> None:
        md = dict(context.invocation_metadata() or ())
        err = self.auth.check(md.get("authorization"))
        if err:
            await abort_with(context, err)

    async def CreateChatCompletion(self, request, context):
        await self._check(context)
        try:
            run = await self.orch.open(request)
            result = await run.completion()
        except RequestError as e:
            self.orch.metrics.requests.labels("grpc", str(e.status)).inc()
            await abort_with(context, e)
        self.orch.metrics.requests.labels("grpc", "200").inc()
        return result

    async def StreamChatCompletion(self, request, context):
        await self._check(context)
        try:
            run = await self.orch.open(request)
            async for chunk in run.chunks():
                yield chunk
        except RequestError as e:
            self.orch.metrics.requests.labels("grpc", str(e.status)).inc()
            await abort_with(context, e)
        self.orch.metrics.requests.labels("grpc", "200").inc()
