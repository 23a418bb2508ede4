"""The engine contract of the decode service: everything its server relies on, in one place.

Shaped after TensorRT-LLM's LLM API (generate_async with streaming, abort by request): token ids
in, new token ids out, a decoding constraint passed as text so each engine compiles it its own
way (xgrammar bitmasks in the batch engine; GuidedDecodingParams in TensorRT-LLM).

What the server (services/decode/server.py) does with an engine, in order:
1. `make_engine` builds it (cheap: nothing loads yet); `model_id` names it from then on.
2. `await start()` loads the model, once, before the server takes requests; `info` is set when
   it returns.
3. While serving: `generate()` per request, `abort()` from the Abort RPC, `active_requests()` for
   the queue bound (--max-queue) and GetModelInfo, `occupancy()` and `stats` for /metrics.
4. `await stop()`, once, after the gRPC server has stopped taking requests.
Every method is called on the server's event loop; an engine that runs its model elsewhere (a
thread, TensorRT-LLM's executor) hands results back to that loop itself.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Protocol

from toolwire.constraints.dialects import STRUCTURAL_TAG
from toolwire.constraints.kinds import Constraint
from toolwire.vocabulary import FinishReason


@dataclass
class EngineRequest:
    request_id: str
    prompt_ids: list[int]
    max_tokens: int  # 0: up to the context
    stop_ids: list[int] = field(default_factory=list)
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    constraint: Constraint | None = None  # in the engine's dialect (info.constraint_dialect)


@dataclass
class EngineOutput:
    token_ids: list[int]  # new ids since the last output
    finish_reason: FinishReason | None = None  # STOP, LENGTH or ABORT, on the last output only
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV was reused, not prefilled

    def then(self, later: EngineOutput) -> EngineOutput:
        """This output and the next one as one (what queued up while the consumer was busy):
        both outputs' tokens, the later one's finish and counts."""
        return EngineOutput(
            self.token_ids + later.token_ids,
            later.finish_reason,
            later.prompt_tokens,
            later.completion_tokens,
            later.cached_tokens,
        )


@dataclass
class EngineLoad:
    running: int  # holding a batch slot (prefilling or decoding)
    waiting: int  # queued for a slot
    cache_used: float  # fraction of the KV cache's positions in use


@dataclass
class EngineStats:
    """Counters of where decode time goes, for /metrics and the bench; each only grows."""

    steps: int = 0  # batched forward passes
    forward_s: float = 0.0  # time in them
    mask_s: float = 0.0  # time applying grammar masks
    tokens: int = 0  # tokens generated
    aborts: int = 0  # requests ended early (client gone, Abort), slot freed
    queue_timeouts: int = 0  # requests that waited past the queue timeout
    # Prefix reuse, in tokens, as vLLM counts them: prompt tokens looked up, and found.
    prefix_queries: int = 0
    prefix_hits: int = 0
    step_threads: int = 0  # the thread count the last step ran (a gauge, not a counter)
    thread_switches: int = 0  # times the thread policy changed it
    # Speculative decoding (drafts.py), as vLLM counts it: drafts verified, their tokens, and
    # the draft tokens the model kept.
    spec_drafts: int = 0
    spec_draft_tokens: int = 0
    spec_accepted_tokens: int = 0


@dataclass
class EngineInfo:
    name: str
    max_model_len: int
    vocab_size: int
    max_batch: int
    constraint_dialect: str = STRUCTURAL_TAG  # see toolwire/constraints/dialects.py


class OutputSink(Protocol):
    """Where a submitted request's outputs go, on the engine's loop (an asyncio.Queue, or the
    multiplexed stream's sink, which also takes `fail(exc)`)."""

    def put_nowait(self, out: EngineOutput, /) -> None: ...


class Submission(Protocol):
    """What submit() returns: `timed_out` is true when an "abort" finish was a queue timeout."""

    timed_out: bool


class QueuedSubmission(Submission, Protocol):
    """A request queued by an engine that schedules its own slots (torch, null): `aborted`
    set tells its step loop to end it."""

    aborted: bool


class QueueingEngine(Protocol):
    """An engine whose submit() pushes to a queue sink, for queued_outputs()."""

    queue_timeout: float

    async def submit(self, request: EngineRequest, sink: OutputSink) -> QueuedSubmission: ...


class Engine(ABC):
    info: EngineInfo  # set by start(); read only after it
    # Where decode time goes, kept up to date while serving; None: the engine cannot tell
    # (its counters are then left out of /metrics).
    stats: EngineStats | None = None

    @property
    def fault(self) -> BaseException | None:
        """What broke the engine for good (then it serves no more); None while it serves."""
        return None

    @property
    @abstractmethod
    def model_id(self) -> str:
        """The id the decode service reports (GetModelInfo, the metrics' model label); known
        before start()."""

    def describe(self) -> str:
        """The engine, and what runs its forward passes, for the service's startup line."""
        return f"{self.info.name} engine"

    @abstractmethod
    async def start(self) -> None:
        """Load the model and get ready to generate; sets `info`. Called once. Raising (or
        SystemExit) fails the service's start."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop generating and let go of the model (threads, executors, GPU memory). Called
        once, after start(), when no new request can arrive."""

    async def wait_fault(self) -> BaseException:
        """Returns when the engine broke for good (a fault outside any one request, such as
        its step loop failing): the service then exits, for its supervisor to restart it,
        rather than queue requests nothing will run. This default never returns."""
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    @abstractmethod
    def generate(self, request: EngineRequest) -> AsyncGenerator[EngineOutput, None]:
        """Stream outputs; the last has finish_reason (stop | length | abort) and the token
        counts. Closing the iterator early aborts the request and frees its slot. Raises
        EngineRequestError for a request it cannot run (the caller's 400) and EngineBusy when
        no slot came free in time (503)."""

    async def submit(self, request: EngineRequest, sink) -> Submission:
        """Start `request` with its outputs pushed to `sink.put_nowait(out)` on this loop
        instead of pulled from generate() (the multiplexed GenerateStream). Raises as
        generate() does for a request it cannot take; a failure after that goes to
        `sink.fail(exc)`. Returns an object whose `timed_out` is true when an "abort" finish
        was a queue timeout. This default runs generate() in a task; an engine that has all
        of a step's outputs in one place (torch) pushes them itself, one loop callback per
        step."""
        stream = self.generate(request)
        first = await anext(stream, None)  # raises here what generate() refuses at once
        done = _Submitted()

        async def pump() -> None:
            try:
                out = first
                while out is not None:
                    sink.put_nowait(out)
                    out = await anext(stream, None)
            except Exception as e:  # noqa: BLE001 - handed to the sink, which reports it
                sink.fail(e)
            finally:
                await stream.aclose()

        done.task = asyncio.get_running_loop().create_task(pump())
        return done

    @abstractmethod
    async def abort(self, request_id: str) -> bool:
        """End a queued or running request: its generate() ends with finish_reason "abort".
        False (and nothing else) for an id that is unknown or already finished."""

    @abstractmethod
    def active_requests(self) -> int:
        """Requests accepted and not finished: holding a slot or waiting for one. The decode
        queue's bound is this minus info.max_batch, so an engine must count what it queues."""

    def occupancy(self) -> EngineLoad:
        """What the scheduler holds now, for /metrics (engines that cannot tell: all running)."""
        return EngineLoad(running=self.active_requests(), waiting=0, cache_used=float("nan"))


def check_engine_request(request: EngineRequest, info: EngineInfo, running) -> None:
    """What an engine that schedules its own slots (torch, null) refuses before it queues a
    request: the caller's 400s, naming the parameter."""
    n = len(request.prompt_ids)
    if n == 0:
        raise EngineRequestError("the prompt is empty", "prompt_token_ids")
    if n >= info.max_model_len:
        raise EngineRequestError(
            f"the prompt has {n} tokens; this model's context is {info.max_model_len}",
            "messages",
        )
    if any(t >= info.vocab_size or t < 0 for t in request.prompt_ids):
        raise EngineRequestError("a prompt token id is outside the vocabulary", "prompt_token_ids")
    if request.request_id in running:
        raise EngineRequestError(
            f"request id {request.request_id!r} is already running", "request_id"
        )


async def constraint_matcher(compiler, request: EngineRequest):
    """The request's constraint compiled off the event loop into its own xgrammar matcher (None
    without a constraint); a constraint that does not compile is the caller's 400. The
    matcher fills numpy bitmasks, so it works where torch is kept out."""
    if not request.constraint:
        return None
    from toolwire.constraints import xgrammar_core as xgr

    try:
        grammar = await asyncio.to_thread(compiler.compile, request.constraint)
    except Exception as e:
        raise EngineRequestError(f"invalid constraint: {e}", "constraint") from e
    return xgr.GrammarMatcher(grammar, override_stop_tokens=request.stop_ids or None)


async def queued_outputs(
    engine: QueueingEngine, request: EngineRequest, wake
) -> AsyncGenerator[EngineOutput, None]:
    """generate() for an engine whose submit() pushes to a queue sink (torch, null): what queued
    up while the consumer was busy comes as one output; a request whose queue wait ran out
    raises EngineBusy; a caller that leaves before the finish marks the request aborted and
    calls `wake()` so the scheduler frees its slot at the next step."""
    queue: asyncio.Queue[EngineOutput] = asyncio.Queue()
    seq = await engine.submit(request, queue)
    finished = False
    try:
        while True:
            out = await queue.get()
            while not queue.empty() and out.finish_reason is None:
                nxt = queue.get_nowait()
                out = out.then(nxt)
            finished = out.finish_reason is not None
            if seq.timed_out:
                raise EngineBusy(f"no decode slot came free in {engine.queue_timeout:g} s")
            yield out
            if finished:
                return
    finally:
        if not finished:
            seq.aborted = True
            wake()


class _Submitted:
    timed_out = False  # the default submit() reports EngineBusy through sink.fail instead
    task: asyncio.Task | None = None


class EngineRequestError(ValueError):
    """A request the engine cannot run (too long, bad constraint): the caller's fault."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class EngineBusy(RuntimeError):
    """The engine could not take the request in time (its queue wait ran out): try again."""
