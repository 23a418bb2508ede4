"""The Responses API as one more rendering of a run's events (gateway/events.py).

Why a builder and not two functions: the streamed event sequence and the final `Response`
object must say the same thing (the SDK's `responses.stream()` checks that each item's `done`
matches its `added`, and `get_final_response()` returns the terminal event's `output` as is), so
one object turns each run event into the stream events it causes and keeps the output items
they build; the non-streamed response is the same builder with its stream events dropped.

The order is the one the SDK's state machine requires (openai-python
`lib/streaming/responses/_responses.py`): `response.created`, `response.in_progress`; per
output item `output_item.added` (a call's with empty `arguments`), for text and reasoning a
`content_part.added` before the deltas, the deltas, their `.done`, `output_item.done`; then
exactly one terminal event (`response.completed`, `response.incomplete` for a length cut, or
`response.failed`) carrying the whole `output` and `usage`. `sequence_number` counts from 0.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from toolwire.errors import RequestError
from toolwire.vocabulary import FinishReason

from .. import events as ev


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class ResponseBuilder:
    """Events in, Responses stream events and the final Response out.

    `envelope` is the Response object's settings (model, tools, tool_choice, text,
    instructions, ...) as the request set them; `namespaces` maps a flattened tool name back to
    (namespace, name); `reasoning_out(text)` gives a reasoning item's `encrypted_content` (None:
    not asked for)."""

    def __init__(
        self,
        response_id: str,
        envelope: dict[str, Any],
        namespaces: dict[str, tuple[str, str]] | None = None,
        reasoning_out=None,
    ):
        self.id = response_id
        self.created_at = int(time.time())
        self.envelope = envelope
        self.namespaces = namespaces or {}
        self.reasoning_out = reasoning_out
        self.seq = 0
        self.output: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None  # the item being written
        self.open_text: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}  # the run's call index -> its item
        self.status = "in_progress"
        self.usage: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.incomplete: dict[str, Any] | None = None

    # -- the Response object -------------------------------------------------------------
    def response(self) -> dict[str, Any]:
        r: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "error": self.error,
            "incomplete_details": self.incomplete,
            "output": list(self.output),
            "usage": self.usage,
        }
        r.update(self.envelope)
        if self.status in ("completed", "incomplete", "failed"):
            r["completed_at"] = int(time.time()) if self.status == "completed" else None
        return r

    def _event(self, type_: str, **fields) -> dict[str, Any]:
        e = {"type": type_, "sequence_number": self.seq, **fields}
        self.seq += 1
        return e

    def start(self) -> list[dict[str, Any]]:
        snapshot = self.response()
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    # -- events ----------------------------------------------------------------------------
    def feed(self, e: ev.Event) -> list[dict[str, Any]]:
        """The stream events `e` causes (possibly none); the last one is terminal after Usage
        or Failed."""
        if isinstance(e, ev.Content):
            return self._text("message", e.text)
        if isinstance(e, ev.Reasoning):
            return self._text("reasoning", e.text)
        if isinstance(e, ev.CallOpened):
            return self._call(e)
        if isinstance(e, ev.Arguments | ev.CustomInput):
            return self._call_text(e.index, e.text)
        if isinstance(e, ev.Finish):
            out = self._close()
            if e.reason == FinishReason.LENGTH:
                self.status = "incomplete"
                self.incomplete = {"reason": "max_output_tokens"}
            else:
                self.status = "completed"
            return out
        if isinstance(e, ev.Usage):
            self.usage = {
                "input_tokens": e.prompt_tokens,
                "input_tokens_details": {"cached_tokens": e.cached_tokens},
                "output_tokens": e.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": e.total_tokens,
            }
            kind = "response.completed" if self.status == "completed" else "response.incomplete"
            return [self._event(kind, response=self.response())]
        if isinstance(e, ev.Failed):
            return self.fail(e.error)
        raise TypeError(f"not a run event: {e!r}")

    def fail(self, error: RequestError) -> list[dict[str, Any]]:
        """The terminal event of a run that failed after it started: what it wrote stays in
        `output`, its open item closed as incomplete."""
        out = self._close(status="incomplete")
        self.status = "failed"
        self.error = {"code": error.code or "server_error", "message": error.message}
        return out + [self._event("response.failed", response=self.response())]

    # -- items -----------------------------------------------------------------------------
    def _text(self, kind: str, text: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        item = self.open
        if item is None or item["type"] != kind:
            out += self._close()
            out += self._open_text_item(kind)
            item = self.open
        assert item is not None
        self.open_text.append(text)
        index = len(self.output) - 1
        if kind == "message":
            out.append(
                self._event(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    delta=text,
                    logprobs=[],
                )
            )
        else:
            out.append(
                self._event(
                    "response.reasoning_text.delta",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    delta=text,
                )
            )
        return out

    def _open_text_item(self, kind: str) -> list[dict[str, Any]]:
        if kind == "message":
            item: dict[str, Any] = {
                "id": new_id("msg"),
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
            part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": []}
        else:
            item = {
                "id": new_id("rs"),
                "type": "reasoning",
                "status": "in_progress",
                "summary": [],
                "content": [],
            }
            part = {"type": "reasoning_text", "text": ""}
        self.open, self.open_text = item, []
        self.output.append(item)
        index = len(self.output) - 1
        return [
            self._event("response.output_item.added", output_index=index, item=_copy(item)),
            self._event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            ),
        ]

    def _call(self, e: ev.CallOpened) -> list[dict[str, Any]]:
        out = self._close()
        namespace, name = self.namespaces.get(e.name, (None, e.name))
        if e.custom:
            item: dict[str, Any] = {
                "id": new_id("ctc"),
                "type": "custom_tool_call",
                "call_id": e.id,
                "name": name,
                "input": "",
                "status": "in_progress",
            }
        else:
            item = {
                "id": new_id("fc"),
                "type": "function_call",
                "call_id": e.id,
                "name": name,
                "arguments": "",
                "status": "in_progress",
            }
        if namespace is not None:
            item["namespace"] = namespace
        self.open, self.open_text = item, []
        self.calls[e.index] = item
        self.output.append(item)
        out.append(
            self._event(
                "response.output_item.added", output_index=len(self.output) - 1, item=_copy(item)
            )
        )
        return out

    def _call_text(self, index: int, text: str) -> list[dict[str, Any]]:
        item = self.calls.get(index)
        if item is None or item is not self.open:  # the extractor closes a call before the next
            raise RuntimeError(f"call {index}'s text came after the call was closed")
        self.open_text.append(text)
        kind = (
            "response.custom_tool_call_input.delta"
            if item["type"] == "custom_tool_call"
            else "response.function_call_arguments.delta"
        )
        return [
            self._event(kind, item_id=item["id"], output_index=len(self.output) - 1, delta=text)
        ]

    def _close(self, status: str = "completed") -> list[dict[str, Any]]:
        """The open item's done events, its text filled in."""
        item = self.open
        if item is None:
            return []
        self.open = None
        text = "".join(self.open_text)
        index = self.output.index(item)
        item["status"] = status
        out: list[dict[str, Any]] = []
        if item["type"] == "message":
            part = {"type": "output_text", "text": text, "annotations": []}
            item["content"] = [part]
            out += [
                self._event(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=text,
                    logprobs=[],
                ),
                self._event(
                    "response.content_part.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part=part,
                ),
            ]
        elif item["type"] == "reasoning":
            part = {"type": "reasoning_text", "text": text}
            item["content"] = [part]
            if self.reasoning_out is not None:
                item["encrypted_content"] = self.reasoning_out(text)
            out += [
                self._event(
                    "response.reasoning_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=text,
                ),
                self._event(
                    "response.content_part.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part=part,
                ),
            ]
        elif item["type"] == "function_call":
            item["arguments"] = text
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=text,
                )
            )
        else:
            item["input"] = text
            out.append(
                self._event(
                    "response.custom_tool_call_input.done",
                    item_id=item["id"],
                    output_index=index,
                    input=text,
                )
            )
        out.append(self._event("response.output_item.done", output_index=index, item=_copy(item)))
        return out


def _copy(item: dict[str, Any]) -> dict[str, Any]:
    """A snapshot of an item as it stands (the builder keeps writing the original)."""
    return {k: (list(v) if isinstance(v, list) else v) for k, v in item.items()}
