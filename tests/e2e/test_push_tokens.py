"""PushTokens, decode's path for routed requests' tokens, against real extractor servers on
loopback (the embedded tokenizer, the hermes format). The test plays the decode replica with a
real PushTokens call (and with decode's own PushTokensStream), and the gateway with its
ExtractStream: every request's deltas, come down the gateway's stream, equal what its own
Extract call gives for the same tokens (over the recorded OpenAI tool calls as well); tokens
pushed before the request's start reached the pod still come out right; a refusal fails only
its request; the last delta carries the usage decode pushed; and over a ReplicaSet of pods,
requests spread and a pod that dies fails exactly its requests (on the gateway's streams and on
decode's links). Last, the whole route with a real decode service (the null engine): gateway
GenerateStream -> decode -> PushTokens -> extractor -> gateway ExtractStream."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib

import grpc
import pytest

from tests.e2e.sse import read_recorded
from toolwire.errors import PARAM_KEY, from_rpc_error
from toolwire.gateway.extract_stream import ExtractEntry, ExtractStream
from toolwire.gateway.generate_stream import GenerateStream
from toolwire.gateway.metrics import Metrics
from toolwire.gateway.orchestrator import Orchestrator
from toolwire.gateway.replicas import ReplicaSet
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.grpc_gen.decode.v1 import decode_pb2 as dpb
from toolwire.grpc_gen.decode.v1 import decode_pb2_grpc
from toolwire.grpc_gen.extractor.v1 import extractor_pb2 as pb
from toolwire.grpc_gen.extractor.v1 import extractor_pb2_grpc as pb_grpc
from toolwire.plumbing.grpc_server import GrpcServer
from toolwire.plumbing.internal_security import ClientSecurity
from toolwire.services.decode.push_tokens import PushTokensStream, PushTokensStreams
from toolwire.services.extractor.server import ExtractorServicer
from toolwire.stack.launcher import free_ports
from toolwire.vocabulary import FinishReason

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
        self.addresses = [f"127.0.0.1:{p}" for p in self.ports]
        self.servers: list[GrpcServer] = []
        self.servicers: list[ExtractorServicer] = []

    async def start(self) -> None:
        for address in self.addresses:
            server = GrpcServer(address)
            servicer = ExtractorServicer(self.tokenizer, "hermes")
            server.add(pb_grpc.add_ExtractorServiceServicer_to_server, servicer, pb.DESCRIPTOR)
            await server.start()
            self.servers.append(server)
            self.servicers.append(servicer)

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


async def _drain(entry) -> list[pb.ExtractResponse]:
    """Every delta of a request, up to its last (or the stream's end)."""
    out = []
    while True:
        r = await asyncio.wait_for(entry.read(), 30)
        if r is grpc.aio.EOF:
            return out
        out.append(r)
        if r.finish_reason:
            return out


def _usage(prompt: int, completion: int, cached: int = 0) -> common.Usage:
    return common.Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cached_tokens=cached,
    )


def _session_tokens(
    route, chunk: list[int] = (), finish: int = 0, usage: common.Usage | None = None
) -> pb.SessionTokens:
    """One step of one routed request, as decode sends it: its tokens, then its end."""
    entry = pb.SessionTokens(session=route.session)
    if chunk:
        entry.handles.append(route.handle)
        entry.counts.append(len(chunk))
        entry.token_ids.extend(chunk)
    if finish:
        entry.ends.add(handle=route.handle, finish_reason=finish, usage=usage)
    return entry


async def _push(stub, messages: list[pb.TokenPush]) -> int:
    """A decode replica's PushTokens call with these messages; the pod's count of them, which
    it returns only once it has taken every message in."""
    call = stub.PushTokens()
    for m in messages:
        await call.write(m)
    await call.done_writing()
    return (await call).messages


async def _ready(stream: ExtractStream) -> None:
    """The pod's headers: it has named the stream's session (ExtractStream.open returns sooner,
    tests/unit/gateway/test_extract_stream.py's xfail)."""
    await stream.call.initial_metadata()


def test_pushed_tokens_give_each_request_what_its_own_call_gives(tokenizer, tokenizer_ids):
    cases = [(t, ["get_weather"]) for t in TEXTS] + _recorded_texts()
    assert len(cases) > len(TEXTS) or not RECORDED.is_dir()
    texts = [t for t, _ in cases]

    async def run():
        servers = Servers(tokenizer, 1)
        await servers.start()
        address = servers.addresses[0]
        ch = grpc.aio.insecure_channel(address)
        stub = pb_grpc.ExtractorServiceStub(ch)
        stream = ExtractStream(address, stub, None)
        link = PushTokensStream(address, ClientSecurity())  # decode's link to this pod
        try:
            chunked = [_chunks(tokenizer_ids(t)) for t in texts]
            alone = [
                await _per_request(stub, _setup(names), c) for (_, names), c in zip(cases, chunked)
            ]
            # Every request on one gateway stream; decode pushes their chunks step by step,
            # interleaved, on one link: one message per step (or fewer, merged).
            entries = [
                await stream.open(_setup(names), f"req-{i}") for i, (_, names) in enumerate(cases)
            ]
            await _ready(stream)
            broken: list[str] = []
            keys = [link.attach(broken.append) for _ in entries]
            usages = [_usage(100 + i, sum(map(len, c)), i) for i, c in enumerate(chunked)]
            for step in range(max(map(len, chunked)) + 1):
                for i, (e, c) in enumerate(zip(entries, chunked)):
                    if step < len(c):
                        link.put_tokens(e.route.session, e.route.handle, c[step])
                    elif step == len(c):
                        link.detach(keys[i])
                        link.put_end(e.route.session, e.route.handle, FinishReason.STOP, usages[i])
                await asyncio.sleep(0)
            together = [await _drain(e) for e in entries]
        finally:
            await link.close()
            await stream.close()
            await ch.close()
            await servers.stop()
        return alone, together, usages, broken

    alone, together, usages, broken = asyncio.run(run())
    assert broken == []
    for (text, names), a, b, usage in zip(cases, alone, together, usages):
        assert _collect(a) == _collect(b), text
        assert b[-1].usage == usage  # decode's counts, not the extractor's
        assert all(not r.HasField("usage") for r in b[:-1])
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


def test_tokens_pushed_before_the_start_arrives_still_come_out_right(tokenizer, tokenizer_ids):
    """The gateway's start and decode's first tokens travel on different connections: tokens
    for a handle the pod has not seen started yet wait for its start (`early`)."""
    text = TEXTS[1]
    ids = tokenizer_ids(text)
    half = len(ids) // 2

    async def run():
        servers = Servers(tokenizer, 1)
        await servers.start()
        address = servers.addresses[0]
        ch = grpc.aio.insecure_channel(address)
        stub = pb_grpc.ExtractorServiceStub(ch)
        stream = ExtractStream(address, stub, None)
        try:
            alone = await _per_request(stub, _setup(), _chunks(ids))
            first = await stream.open(_setup(), "req-first")  # the stream, and its session
            await _ready(stream)

            # The next two handles on this stream, before their starts are sent: one request
            # gets its first half early, the other all of it, end included.
            def route(h: int) -> dpb.ExtractRoute:
                return dpb.ExtractRoute(address=address, session=stream.session, handle=h)

            half_early, all_early = route(first.handle + 1), route(first.handle + 2)
            usage = _usage(12, len(ids))
            taken = await _push(
                stub,
                [
                    pb.TokenPush(
                        sessions=[_session_tokens(half_early, c), _session_tokens(all_early, c)]
                    )
                    for c in _chunks(ids[:half])
                ]
                + [
                    pb.TokenPush(
                        sessions=[
                            _session_tokens(all_early, ids[half:], common.FINISH_REASON_STOP, usage)
                        ]
                    )
                ],
            )
            a = await stream.open(_setup(), "req-a")
            b = await stream.open(_setup(), "req-b")
            assert (a.route, b.route) == (half_early, all_early)
            late = [
                pb.TokenPush(sessions=[_session_tokens(half_early, c)]) for c in _chunks(ids[half:])
            ]
            late.append(
                pb.TokenPush(
                    sessions=[_session_tokens(half_early, (), common.FINISH_REASON_STOP, usage)]
                )
            )
            taken_late = await _push(stub, late)
            got = [await _drain(a), await _drain(b)]
            first.cancel()
            return alone, got, taken, len(late), taken_late, usage
        finally:
            await stream.close()
            await ch.close()
            await servers.stop()

    alone, got, taken, sent_late, taken_late, usage = asyncio.run(run())
    assert taken == len(_chunks(ids[:half])) + 1 and taken_late == sent_late
    for deltas in got:
        assert _collect(deltas) == _collect(alone)
        assert deltas[-1].usage == usage
    assert _collect(alone)[1]  # the text's call was read, early tokens or not


def test_a_refusal_fails_only_its_request(tokenizer, tokenizer_ids):
    async def run():
        servers = Servers(tokenizer, 1)
        await servers.start()
        address = servers.addresses[0]
        ch = grpc.aio.insecure_channel(address)
        stub = pb_grpc.ExtractorServiceStub(ch)
        stream = ExtractStream(address, stub, None)
        try:
            bad = await stream.open(_setup(tool_format="no_such_format"), "req-bad")
            good = await stream.open(_setup(), "req-good")
            await _ready(stream)
            ids = tokenizer_ids("Hello there")
            usage = _usage(5, len(ids))
            await _push(
                stub,
                [
                    pb.TokenPush(sessions=[_session_tokens(e.route, ids[:2]) for e in (bad, good)]),
                    pb.TokenPush(
                        sessions=[
                            _session_tokens(e.route, ids[2:], common.FINISH_REASON_LENGTH, usage)
                            for e in (bad, good)
                        ]
                    ),
                ],
            )
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await _drain(bad)
            deltas = await _drain(good)
            return e.value, deltas, usage
        finally:
            await stream.close()
            await ch.close()
            await servers.stop()

    error, deltas, usage = asyncio.run(run())
    err = from_rpc_error(error, "extractor")
    assert err.status == 400 and err.param == "tool_format"
    assert dict(error.trailing_metadata())[PARAM_KEY] == "tool_format"
    content, _, finish = _collect(deltas)
    assert content == "Hello there" and finish == "length"
    assert deltas[-1].usage == usage
    assert deltas[-1].finish_reason_code == common.FINISH_REASON_LENGTH


def test_a_stop_string_ends_the_turn_with_the_tokens_taken_so_far(tokenizer, tokenizer_ids):
    """A turn a stop string ended has its last delta before decode's end: its usage counts the
    tokens the pod took, and the end pushed after it (decode had run on) adds nothing."""
    text = "Plain words until STOP and then more words the client never sees."

    async def run():
        servers = Servers(tokenizer, 1)
        await servers.start()
        address = servers.addresses[0]
        ch = grpc.aio.insecure_channel(address)
        stub = pb_grpc.ExtractorServiceStub(ch)
        stream = ExtractStream(address, stub, None)
        try:
            e = await stream.open(_setup(stop=["STOP"]), "req-stop")
            other = await stream.open(_setup(), "req-other")
            await _ready(stream)
            chunks = [[t] for t in tokenizer_ids(text)]
            messages = [
                pb.TokenPush(
                    sessions=[_session_tokens(e.route, c), _session_tokens(other.route, c)]
                )
                for c in chunks
            ]
            end = _usage(3, len(chunks))
            messages.append(
                pb.TokenPush(
                    sessions=[
                        _session_tokens(r, (), common.FINISH_REASON_LENGTH, end)
                        for r in (e.route, other.route)
                    ]
                )
            )
            await _push(stub, messages)
            return await _drain(e), await _drain(other), len(chunks), end
        finally:
            await stream.close()
            await ch.close()
            await servers.stop()

    stopped, other, n, end = asyncio.run(run())
    content, _, finish = _collect(stopped)
    assert content == "Plain words until " and finish == "stop"
    taken = stopped[-1].usage.completion_tokens
    assert 0 < taken < n  # the tokens up to the stop string, not decode's count
    assert _collect(other) == (text, {}, "length") and other[-1].usage == end


def test_pool_spreads_and_a_dead_pod_fails_exactly_its_requests(tokenizer, tokenizer_ids):
    ids = tokenizer_ids("Some text")

    async def run():
        servers = Servers(tokenizer, 2)
        await servers.start()
        orch = Orchestrator("t:1", [], servers.addresses, [], Metrics())
        orch.extractor = ReplicaSet(
            "extractor pod",
            servers.addresses,
            ClientSecurity(),
            lambda address, ch: ExtractStream(address, pb_grpc.ExtractorServiceStub(ch), ()),
        )
        await orch.extractor.start()
        links = PushTokensStreams()  # decode's links, one per pod, found by the routes
        broken: dict[int, list[str]] = {}
        try:
            entries: list[ExtractEntry] = [
                await orch.open_extraction(_setup(), f"req-{i}") for i in range(6)
            ]
            by_pod: dict[str, list[ExtractEntry]] = {}
            for e in entries:
                by_pod.setdefault(e.route.address, []).append(e)
            assert set(by_pod) == set(servers.addresses)
            assert all(len(v) == 3 for v in by_pod.values())
            for r in orch.extractor.replicas.values():
                assert r.stream.load == 3 and r.picks == 3
                await _ready(r.stream)
            for e in entries:
                link = links.get(e.route.address)
                assert e.stream.address == e.route.address
                broken[e.handle, e.route.address] = []
                link.attach(broken[e.handle, e.route.address].append)
                link.put_tokens(e.route.session, e.route.handle, ids)
            await asyncio.sleep(0.2)
            # Kill the first server (the extractor process dying): its stream breaks, and so
            # does decode's link to it.
            dead = servers.addresses[0]
            await servers.servers[0].server.stop(0)
            for e in by_pod[dead]:
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await _drain(e)
                assert from_rpc_error(raised.value, "extractor").status == 503
            for _ in range(200):
                if links.get(dead).call is None:
                    break
                await asyncio.sleep(0.01)
            live = servers.addresses[1]
            for e in by_pod[live]:
                links.get(live).put_end(
                    e.route.session, e.route.handle, "stop", _usage(2, len(ids))
                )
                content, _, finish = _collect(await _drain(e))
                assert content == "Some text" and finish == "stop"
            # New requests go to the pod that lives; the dead one is marked down on the way.
            again = await orch.open_extraction(_setup(), "req-again")
            assert again.route.address == live
            assert not orch.extractor.replicas[dead].healthy
            again.cancel()
            return broken, dead
        finally:
            await links.close()
            await orch.extractor.close()
            await servers.stop()

    broken, dead = asyncio.run(run())
    for (_, address), heard in broken.items():
        if address == dead:
            assert len(heard) == 1 and dead in heard[0]
        else:
            assert heard == []


async def _decode_server(engine):
    from toolwire.services.decode.server import DecodeServicer

    (port,) = free_ports(1)
    server = GrpcServer(f"127.0.0.1:{port}")
    links = PushTokensStreams()
    server.add(
        decode_pb2_grpc.add_DecodeServiceServicer_to_server,
        DecodeServicer(engine, "null", 16, links),
        dpb.DESCRIPTOR,
    )
    await server.start()
    return server, links, f"127.0.0.1:{port}"


def test_the_whole_route_with_a_real_decode_service(tokenizer):
    """The gateway's two streams, a decode service (the null engine) and an extractor pod:
    decode's tokens reach the gateway as text, never as ids on its decode stream."""
    from toolwire.services.decode.null_engine import CYCLE_TEXT, NullEngine

    async def run():
        engine = NullEngine(max_batch=8)
        await engine.start()
        servers = Servers(tokenizer, 1)
        await servers.start()
        server, links, decode_address = await _decode_server(engine)
        address = servers.addresses[0]
        ch = grpc.aio.insecure_channel(address)
        dch = grpc.aio.insecure_channel(decode_address)
        extract = ExtractStream(address, pb_grpc.ExtractorServiceStub(ch), ())
        generate = GenerateStream(decode_pb2_grpc.DecodeServiceStub(dch), ())
        try:
            results = []
            opened = []
            for i, n in enumerate((5, 17, 40)):
                e = await extract.open(pb.ExtractSetup(tool_format="hermes"), f"req-{i}")
                await _ready(extract)
                request = dpb.GenerateRequest(
                    request_id=f"req-{i}", prompt_token_ids=[1, 2, 3], max_tokens=n
                )
                g = generate.open(request, e.route)
                opened.append((e, g, n))
            for _, g, _ in opened:
                await asyncio.wait_for(g.started(), 30)
            for e, _, n in opened:
                results.append((await _drain(e), n))
            for _ in range(200):
                if all(g.complete is not None for _, g, _ in opened):
                    break
                await asyncio.sleep(0.01)
            completes = [g.complete for _, g, _ in opened]
            # A cancel from the gateway: decode aborts it, and the pod sees the abort.
            e = await extract.open(pb.ExtractSetup(tool_format="hermes"), "req-cancel")
            g = generate.open(
                dpb.GenerateRequest(request_id="req-cancel", prompt_token_ids=[1], max_tokens=0),
                e.route,
            )
            await asyncio.wait_for(g.started(), 30)
            g.cancel()
            cancelled = await _drain(e)
            return results, completes, cancelled, engine.active_requests()
        finally:
            await generate.close()
            await extract.close()
            await links.close()
            await server.stop(0)
            await ch.close()
            await dch.close()
            await servers.stop()
            await engine.stop()

    results, completes, cancelled, active = asyncio.run(run())
    cycle = tokenizer(CYCLE_TEXT, add_special_tokens=False)["input_ids"]
    for (deltas, n), complete in zip(results, completes):
        content, calls, finish = _collect(deltas)
        want = tokenizer.decode([cycle[i % len(cycle)] for i in range(n)])  # the engine's cycle
        assert content == want and not calls and finish == "length"
        assert deltas[-1].usage == _usage(3, n)
        assert complete.finish_reason == "length" and complete.completion_tokens == n
    assert _collect(cancelled)[2] == "abort"
    assert active == 0
