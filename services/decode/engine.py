"""The engine contract of the decode service.

Shaped after TensorRT-LLM's LLM API (generate_async with streaming, abort by request): token ids
in, new token ids out, a decoding constraint passed as text so each engine compiles it its own
way (xgrammar bitmasks in torch; GuidedDecodingParams in TensorRT-LLM).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import AsyncIterator

from toolwire.constraints.dialects import STRUCTURAL_TAG
from toolwire.constraints.kinds import Constraint


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
    finish_reason: str | None = None  # stop | length | abort, on the last output only
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class EngineLoad:
    running: int  # holding a batch slot (prefilling or decoding)
    waiting: int  # queued for a slot
    cache_used: float  # fraction of the KV cache's positions in use


@dataclass
class EngineInfo:
    name: str
    max_model_len: int
    vocab_size: int
    max_batch: int
    constraint_dialect: str = STRUCTURAL_TAG  # see toolwire/constraints/dialects.py


class Engine(ABC):
    info: EngineInfo

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        """Stream outputs; the last has finish_reason. Closing the iterator early aborts."""

    @abstractmethod
    async def abort(self, request_id: str) -> bool: ...

    def active_requests(self) -> int:
        return 0

    def occupancy(self) -> "EngineLoad":
        """What the scheduler holds now, for /metrics (engines that cannot tell: all running)."""
        return EngineLoad(running=self.active_requests(), waiting=0, cache_used=float("nan"))


class EngineRequestError(ValueError):
    """A request the engine cannot run (too long, bad constraint): the caller's fault."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class EngineBusy(RuntimeError):
    """The engine could not take the request in time (its queue wait ran out): try again."""
