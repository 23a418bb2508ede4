"""GenerateStream, the gateway's multiplexed decode stream, against the session stack's real
decode service: the same tokens as the per-request Generate call for the same seeded request,
a cancel frees the slot, a refused request comes back as a failure entry with the status and
metadata Generate would end with, and a stream that ends aborts every request on it."""

from __future__ import annotations

import queue
import threading
import time

import grpc
import pytest

from toolwire.errors import PARAM_KEY
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.grpc_gen.decode.v1 import decode_pb2 as pb
from toolwire.grpc_gen.decode.v1 import decode_pb2_grpc
from toolwire.plumbing.internal_security import TOKEN_KEY

PROMPT = [791, 3363, 315, 9822, 374, 264, 1317, 3446, 922, 18198, 13]


@pytest.fixture
def decode(stack):
    with grpc.insecure_channel(stack.service_addresses()["decode"]) as ch:
        yield decode_pb2_grpc.DecodeServiceStub(ch), [(TOKEN_KEY, stack.internal_token)]


def _request(rid: str, max_tokens: int, seed: int | None = 7) -> pb.GenerateRequest:
    r = pb.GenerateRequest(
        request_id=rid,
        prompt_token_ids=PROMPT,
        max_tokens=max_tokens,
        sampling=pb.SamplingParams(temperature=1.0, top_p=1.0),
    )
    if seed is not None:
        r.sampling.seed = seed
    return r


class Stream:
    """A GenerateStream call driven from the test: send() messages, frames() to read."""

    def __init__(self, stub, md):
        self.up: queue.Queue = queue.Queue()
        self.call = stub.GenerateStream(iter(self.up.get, None), metadata=md)
        self.tokens: dict[int, list[int]] = {}
        self.finishes: dict[int, pb.GenerateComplete] = {}
        self.failures: dict[int, pb.StreamFailure] = {}
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def start(self, handle: int, request: pb.GenerateRequest) -> None:
        self.up.put(pb.StreamRequest(start=pb.StreamStart(handle=handle, request=request)))

    def cancel(self, handle: int) -> None:
        self.up.put(pb.StreamRequest(cancel=pb.StreamCancel(handle=handle)))

    def _read(self) -> None:
        try:
            for frame in self.call:
                pos = 0
                for h, n in zip(frame.handles, frame.counts):
                    self.tokens.setdefault(h, []).extend(frame.token_ids[pos : pos + n])
                    pos += n
                assert pos == len(frame.token_ids)
                for f in frame.finishes:
                    self.finishes[f.handle] = f.complete
                for f in frame.failures:
                    self.failures[f.handle] = f
        except grpc.RpcError:
            pass

    def wait(self, cond, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, (self.tokens, self.finishes, self.failures)
            time.sleep(0.01)

    def close(self) -> None:
        self.up.put(None)


def _active(stub, md) -> int:
    return stub.GetModelInfo(common.GetModelInfoRequest(), metadata=md).active_requests


def _wait_idle(stub, md, within: float) -> float:
    t0 = time.monotonic()
    while _active(stub, md):
        assert time.monotonic() - t0 < within, "the engine still holds the request"
        time.sleep(0.02)
    return time.monotonic() - t0


def _counts(complete) -> tuple:
    return complete.finish_reason, complete.prompt_tokens, complete.completion_tokens


def test_the_stream_gives_the_same_tokens_as_generate(decode):
    stub, md = decode
    alone = {}
    for h, seed in ((1, 7), (2, 8)):
        out = list(stub.Generate(_request(f"mux-ref-{h}", 12, seed), metadata=md))
        alone[h] = [t for m in out if m.HasField("chunk") for t in m.chunk.token_ids]
        alone[h, "complete"] = out[-1].complete
    s = Stream(stub, md)
    try:
        s.start(1, _request("mux-a", 12, 7))
        s.start(2, _request("mux-b", 12, 8))
        s.wait(lambda: len(s.finishes) == 2)
        for h in (1, 2):
            assert s.tokens[h] == alone[h]  # same seed, same tokens, batched or not
            # cached_tokens is left out: it tells what the prefix cache held (the references
            # ran first with the same prompt), not what was generated.
            assert _counts(s.finishes[h]) == _counts(alone[h, "complete"])
            assert s.finishes[h].finish_reason == "length"
    finally:
        s.close()


def test_cancel_frees_the_slot_and_a_refusal_is_a_failure_entry(decode):
    stub, md = decode
    s = Stream(stub, md)
    try:
        s.start(1, _request("mux-long", 2000))
        s.start(2, _request("", 4))  # Generate refuses it: request_id is required
        s.wait(lambda: len(s.tokens.get(1, ())) >= 2 and 2 in s.failures)
        f = s.failures[2]
        assert grpc.StatusCode.INVALID_ARGUMENT.value[0] == f.status_code
        assert f.metadata[PARAM_KEY] == "request_id" and "request_id" in f.details
        s.cancel(1)
        assert _wait_idle(stub, md, within=2.0) < 2.0
        assert 1 not in s.finishes or s.finishes[1].finish_reason == "abort"
        assert len(s.tokens[1]) < 2000
    finally:
        s.close()


def test_a_stream_that_ends_aborts_every_request_on_it(decode):
    stub, md = decode
    s = Stream(stub, md)
    s.start(1, _request("mux-gone-1", 2000))
    s.start(2, _request("mux-gone-2", 2000, seed=None))
    s.wait(lambda: len(s.tokens.get(1, ())) >= 2 and len(s.tokens.get(2, ())) >= 2)
    assert _active(stub, md) == 2
    s.call.cancel()  # the gateway went away
    _wait_idle(stub, md, within=2.0)
