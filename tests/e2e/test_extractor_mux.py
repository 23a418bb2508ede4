"""ExtractStream, the gateway's multiplexed extractor stream, against real extractor servers on
loopback (the embedded tokenizer, the hermes format): every request's deltas equal what its
own Extract call gives for the same tokens (over the recorded OpenAI tool calls as well),
a refusal comes back as that request's failure, and an extractor that dies fails exactly the
requests on its stream."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib

import grpc
import pytest

from tests.e2e.sse import read_recorded
from toolwire.errors import PARAM_KEY, from_rpc_error
from toolwire.gateway.extractor_mux import ExtractStream
from toolwire.gateway.extractor_pool import ExtractorPool
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.grpc_gen.extractor.v1 import extractor_pb2 as pb
from toolwire.grpc_gen.extractor.v1 import extractor_pb2_grpc as pb_grpc
from toolwire.plumbing.grpc_server import GrpcServer
from toolwire.plumbing.internal_security import ClientSecurity
from toolwire.services.extractor.server import ExtractorServicer
from toolwire.stack.launcher import free_ports

RECORDED = pathlib.Path(
    os.environ.get(
        "TOOLWIRE_RECORDED_STREAMS",
        pathlib.Path(__file__).resolve().parents[3] / "shared/reference/openai-recorded-streams",
    )
)


def _tool(name: str) -> common.FunctionTool:
    return common.FunctionTool(name=name, parameters_json=json.dumps({"type": "object"}))


def _setup(names=("get_weather",), **kw) -> pb.ExtractSetup:
    base = dict(
        tool_format="hermes",
        tools=[_tool(n) for n in names],
        tool_choice=common.ToolChoice(mode=common.ToolChoice.MODE_AUTO),
    )
    base.update(kw)
    return pb.ExtractSetup(**base)


def _hermes(content: str, calls: list[tuple[str, str]]) -> str:
    text = content
    for name, args in calls:
        text += f'<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>'
    return text


def _written_arguments(text: str) -> list:
    out = []
    for part in text.split("<tool_call>\n")[1:]:
        try:
            out.append(json.loads(part.split("\n</tool_call>")[0])["arguments"])
        except (json.JSONDecodeError, KeyError):
            pass
    return out


TEXTS = [
    "Plain answer, no call. Thé café ☕ and more text after it.",
    _hermes("Let me check. ", [("get_weather", '{"location": "Paris, France", "unit": "c"}')]),
    _hermes("", [("get_weather", '{"location": "Rome"}'), ("get_weather", '{"q": "a \\"}\\""}')]),
    _hermes("", [("get_weather", '{"cut": "mid')]),
]


def _recorded_texts() -> list[tuple[str, list[str]]]:
    """The recorded OpenAI streams' tool calls, written as the hermes format writes calls
    (with their tools' names)."""
    out = []
    for path in sorted(RECORDED.glob("*.bin")) if RECORDED.is_dir() else []:
        calls: dict[int, list[str]] = {}
        content = ""
        for event in read_recorded(path):
            if event == "[DONE]":
                continue
            for ch in event.get("choices", []):
                content += ch["delta"].get("content") or ""
                for d in ch["delta"].get("tool_calls") or []:
                    entry = calls.setdefault(d["index"], ["", ""])
                    entry[0] += d["function"].get("name") or ""
                    entry[1] += d["function"].get("arguments") or ""
        if calls:
            pairs = [(n, a) for n, a in calls.values()]
            out.append((_hermes(content, pairs), sorted({n for n, _ in pairs})))
    return out


@pytest.fixture(scope="module")
def tokenizer_ids(tokenizer):
    return lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]


class Servers:
    """Extractor servers in this process, on loopback."""

    def __init__(self, tokenizer, n: int):
        self.tokenizer = tokenizer
        self.ports = free_ports(n)
        self.servers: list[GrpcServer] = []

    async def start(self) -> None:
        for port in self.ports:
            server = GrpcServer(f"127.0.0.1:{port}")
            servicer = ExtractorServicer(self.tokenizer, "hermes")
            server.add(pb_grpc.add_ExtractorServiceServicer_to_server, servicer, pb.DESCRIPTOR)
            await server.start()
            self.servers.append(server)

    async def stop(self) -> None:
        for s in self.servers:
            await s.server.stop(0)


def _chunks(ids: list[int], sizes=(1, 2, 3)) -> list[list[int]]:
    out, pos, i = [], 0, 0
    while pos < len(ids):
        n = sizes[i % len(sizes)]
        out.append(ids[pos : pos + n])
        pos, i = pos + n, i + 1
    return out


def _collect(responses: list[pb.ExtractResponse]) -> tuple[str, dict, str]:
    content, calls, finish = "", {}, ""
    for r in responses:
        content += r.content
        for c in r.tool_calls:
            entry = calls.setdefault(c.index, ["", ""])
            entry[0] += c.name
            entry[1] += c.arguments
        finish = r.finish_reason or finish
    return content, calls, finish


async def _per_request(stub, setup, chunks, reason="stop") -> list[pb.ExtractResponse]:
    call = stub.Extract()
    await call.write(pb.ExtractRequest(setup=setup))
    for c in chunks:
        await call.write(pb.ExtractRequest(tokens=pb.TokenChunk(token_ids=c)))
    await call.write(pb.ExtractRequest(end=pb.ExtractEnd(finish_reason=reason)))
    await call.done_writing()
    return [r async for r in call]


async def _drain(handle) -> list[pb.ExtractResponse]:
    out = []
    while True:
        r = await handle.read()
        if r is grpc.aio.EOF:
            return out
        out.append(r)
        if r.finish_reason:
            return out


def test_mux_gives_each_request_what_its_own_call_gives(tokenizer, tokenizer_ids):
    cases = [(t, ["get_weather"]) for t in TEXTS] + _recorded_texts()
    assert len(cases) > len(TEXTS) or not RECORDED.is_dir()
    texts = [t for t, _ in cases]

    async def run():
        servers = Servers(tokenizer, 1)
        await servers.start()
        ch = grpc.aio.insecure_channel(f"127.0.0.1:{servers.ports[0]}")
        stub = pb_grpc.ExtractorServiceStub(ch)
        stream = ExtractStream(stub, None)
        try:
            chunked = [_chunks(tokenizer_ids(t)) for t in texts]
            alone = [
                await _per_request(stub, _setup(names), c) for (_, names), c in zip(cases, chunked)
            ]
            # Every request on one stream, their chunks interleaved step by step as the
            # gateway's pumps put one decode frame's tokens: one message per step.
            handles = [await stream.open(_setup(names)) for _, names in cases]
            for step in range(max(map(len, chunked)) + 1):
                for h, c in zip(handles, chunked):
                    if step < len(c):
                        await h.tokens(c[step])
                    elif step == len(c):
                        await h.end("stop")
                await asyncio.sleep(0)
            together = [await _drain(h) for h in handles]
        finally:
            await stream.close()
            await ch.close()
            await servers.stop()
        return alone, together

    alone, together = asyncio.run(run())
    for (text, names), a, b in zip(cases, alone, together):
        assert _collect(a) == _collect(b), text
        content, calls, finish = _collect(b)
        assert finish in ("stop", "tool_calls")
        for name, args in calls.values():
            assert name in names
            try:
                value = json.loads(args)
            except json.JSONDecodeError:
                assert args.startswith("{")  # a call the text left unfinished
            else:  # the written arguments, as the format writes them
                assert value in _written_arguments(text)
    # The recorded calls came out as calls, not as content.
    assert sum(bool(_collect(b)[1]) for b in together) >= len(cases) - 1


def test_refusal_fails_only_its_request(tokenizer, tokenizer_ids):
    async def run():
        servers = Servers(tokenizer, 1)
        await servers.start()
        ch = grpc.aio.insecure_channel(f"127.0.0.1:{servers.ports[0]}")
        stream = ExtractStream(pb_grpc.ExtractorServiceStub(ch), None)
        try:
            bad = await stream.open(_setup(tool_format="no_such_format"))
            good = await stream.open(_setup())
            await good.tokens(tokenizer_ids("Hello there"))
            await good.end("length")
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await bad.read()
            err = from_rpc_error(e.value, "extractor")
            assert err.status == 400 and err.param == "tool_format"
            assert dict(e.value.trailing_metadata())[PARAM_KEY] == "tool_format"
            content, _, finish = _collect(await _drain(good))
            assert content == "Hello there" and finish == "length"
        finally:
            await stream.close()
            await ch.close()
            await servers.stop()

    asyncio.run(run())


def test_pool_spreads_and_a_dead_pod_fails_exactly_its_requests(tokenizer, tokenizer_ids):
    async def run():
        servers = Servers(tokenizer, 2)
        await servers.start()
        pool = ExtractorPool([f"127.0.0.1:{p}" for p in servers.ports], ClientSecurity())
        await pool.start()
        try:
            handles = [await pool.open(_setup(), None) for _ in range(6)]
            by_pod = {}
            for h in handles:
                by_pod.setdefault(h.stream, []).append(h)
            assert len(by_pod) == 2 and all(len(v) == 3 for v in by_pod.values())
            for h in handles:
                await h.tokens(tokenizer_ids("Some text"))
            await asyncio.sleep(0.2)
            # Kill the first server (the extractor process dying): its stream breaks.
            dead = pool.pods[f"127.0.0.1:{servers.ports[0]}"].stream
            await servers.servers[0].server.stop(0)
            for h in by_pod[dead]:
                with pytest.raises(grpc.aio.AioRpcError) as e:
                    await _drain(h)
                assert from_rpc_error(e.value, "extractor").status == 503
            for h in handles:
                if h.stream is not dead:
                    await h.end("stop")
                    content, _, finish = _collect(await _drain(h))
                    assert content == "Some text" and finish == "stop"
            # New requests go to the pod that lives.
            again = await pool.open(_setup(), None)
            assert again.stream is not dead
            again.cancel()
        finally:
            await pool.close()
            await servers.stop()

    asyncio.run(run())
