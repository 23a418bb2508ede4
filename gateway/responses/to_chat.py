"""A Responses API create body into the ChatCompletionRequest proto the one run path takes, and
the Turn: what the Responses presentation needs to write the run back as a Response.

The conversation is `history` (the stored items of previous_response_id's chain, earlier inputs
and outputs in the API's own item shapes) and then `input`:

- `instructions` is a leading system message, for this turn only (history never holds it);
- a message item is a ChatMessage of its role, its text parts joined into one string (open
  models' templates read `content` as a string; several render a list as nothing);
- consecutive reasoning, assistant message and function_call / custom_tool_call items are ONE
  assistant ChatMessage (reasoning_content, content, tool_calls with id = call_id) while they
  come in that order; a second reasoning or message, or one after a call, starts the next;
- function_call_output and custom_tool_call_output are tool messages (tool_call_id = call_id):
  toolwire's formats render a custom call's result as any other tool result; an output whose
  call_id matches no earlier call, and a call no output answers, are refused (as OpenAI does);
- item_reference is resolved by the caller's `resolve_item(id)` (404 when it finds nothing);
- a reasoning item's text is its `encrypted_content` when set (the presentation writes it with
  encode_reasoning: base64url of {"v": 1, "text": ...}, opaque but not secret), else its
  `content` texts; a summary is not the reasoning and is not replayed.

Tools and tool_choice: tools.py (strict by default where compatible, namespaces flattened,
hosted tools refused or left out).

Errors name this body's parameters (`input[3].call_id`, `tools[2].format.definition`). The
proto's checks (toolwire/request/checks.py, run here for the conversation and again by the
orchestrator) name chat parameters; Turn.translate turns those into this body's names, so a
caller wraps `orchestrator.open(proto)` with it too.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic

from toolwire.errors import RequestError, invalid_value, unsupported, unsupported_value
from toolwire.grpc_gen.chat.v1 import chat_pb2
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.request.checks import check_conversation, check_sampling
from toolwire.vocabulary import ErrorCode

from .request import (
    CustomToolCallItem,
    CustomToolCallOutputItem,
    FunctionCallItem,
    FunctionCallOutputItem,
    InputItem,
    InputText,
    ItemReference,
    MessageItem,
    OtherFormat,
    OtherItem,
    OutputText,
    ReasoningItem,
    RefusalPart,
    ResponseCreateRequest,
    TextFormatJSONObject,
    TextFormatJSONSchema,
)
from .tools import flat_name, read_tool_choice, read_tools

# Input items of those tools (and OpenAI's own state items): refused, naming input[i].type.
HOSTED_ITEMS = frozenset(
    {
        "file_search_call",
        "computer_call",
        "computer_call_output",
        "web_search_call",
        "image_generation_call",
        "code_interpreter_call",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "mcp_call",
        "tool_search_call",
        "tool_search_output",
        "program",
        "program_output",
    }
)
ENCRYPTED_REASONING = "reasoning.encrypted_content"
# `include` values that change nothing: the items they add to cannot be produced here.
INCLUDE_NOTHING = frozenset(
    {
        "file_search_call.results",
        "web_search_call.results",
        "web_search_call.action.sources",
        "message.input_image.image_url",
        "computer_call_output.output.image_url",
        "code_interpreter_call.outputs",
    }
)
INCLUDABLE = INCLUDE_NOTHING | {ENCRYPTED_REASONING, "message.output_text.logprobs"}
SERVICE_TIERS = ("auto", "default")
_ITEM = pydantic.TypeAdapter(InputItem)


# -- reasoning's encrypted_content -------------------------------------------------------------
def encode_reasoning(text: str) -> str:
    """A reasoning item's `encrypted_content`: base64url (unpadded) of {"v": 1, "text": text}.
    Opaque to clients, not secret: it only lets a stateless client (store: false) hand the
    reasoning back on its next request."""
    raw = json.dumps({"v": 1, "text": text}, ensure_ascii=False, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode("ascii")


def decode_reasoning(blob: str) -> str:
    """The reasoning text encode_reasoning wrote; ValueError for anything else (another
    server's encrypted content, a damaged string)."""
    try:
        raw = base64.b64decode(blob + "=" * (-len(blob) % 4), altchars=b"-_", validate=True)
        d = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError) as e:  # JSON and UTF-8 errors alike
        raise ValueError(f"not toolwire's encrypted reasoning: {e}") from None
    if not isinstance(d, dict) or d.get("v") != 1 or not isinstance(d.get("text"), str):
        raise ValueError("not toolwire's encrypted reasoning (version 1)")
    return d["text"]


# -- the Turn ----------------------------------------------------------------------------------
_MESSAGE = re.compile(r"^messages\[(\d+)\](.*)$")
_CALL = re.compile(r"^\.tool_calls\[(\d+)\](.*)$")
_TOOL = re.compile(r"^tools\[(\d+)\](.*)$")
_ALLOWED = re.compile(r"^tool_choice\.allowed_tools\.tools\[(\d+)\](.*)$")
_FIXED = {
    "messages": "input",
    "reasoning_effort": "reasoning.effort",
    "max_tokens": "max_output_tokens",
    "max_completion_tokens": "max_output_tokens",
    "response_format": "text.format",
    "response_format.type": "text.format.type",
    "response_format.json_schema": "text.format",
    "response_format.json_schema.name": "text.format.name",
    "response_format.json_schema.schema": "text.format.schema",
    "response_format.json_schema.strict": "text.format.strict",
    "tool_choice.allowed_tools": "tool_choice",
    "tool_choice.allowed_tools.mode": "tool_choice.mode",
    "tool_choice.allowed_tools.tools": "tool_choice.tools",
}
_TOOL_SUFFIX = {
    ".function": "",
    ".custom": "",
    ".function.name": ".name",
    ".custom.name": ".name",
    ".function.parameters": ".parameters",
    ".custom.format": ".format",
    ".custom.format.type": ".format.type",
    ".custom.format.grammar.syntax": ".format.syntax",
    ".custom.format.grammar.definition": ".format.definition",
}
_CALL_SUFFIX = {
    ".function": "",
    ".custom": "",
    ".function.name": ".name",
    ".custom.name": ".name",
    ".function.arguments": ".arguments",
    ".custom.input": ".input",
}
# A chat parameter path inside an error message ("tools[0]: duplicate function name ...").
_IN_MESSAGE = re.compile(
    r"(?:messages|tools)\[\d+\](?:\.[A-Za-z_]+(?:\[\d+\])?)*"
    r"|tool_choice\.allowed_tools(?:\.[a-z_]+(?:\[\d+\])?)*"
    r"|response_format(?:\.[a-z_]+)*|reasoning_effort|max_completion_tokens|max_tokens"
    r"|'messages'"
)


@dataclass(frozen=True)
class Turn:
    """What the Responses presentation needs besides the proto."""

    tools: list[dict[str, Any]]  # the Response's `tools` echo: as offered (dropped ones out)
    tool_choice: str | dict[str, Any]  # the Response's `tool_choice` echo
    parallel_tool_calls: bool  # the echo (OpenAI's default: true)
    text: dict[str, Any]  # the echo: {"format": {...}, "verbosity": "medium"}
    namespaces: dict[str, tuple[str, str]]  # flat tool name -> (namespace, name)
    dropped_tools: tuple[str, ...] = ()  # hosted tools left out ("web_search", "mcp:label")
    encrypted_reasoning: bool = False  # include has reasoning.encrypted_content
    # Where each proto message, call, tool and allowed tool came from in this body:
    message_params: tuple[str, ...] = ()
    call_params: dict[tuple[int, int], str] = field(default_factory=dict)
    tool_params: tuple[str, ...] = ()
    allowed_params: tuple[str, ...] = ()

    def param(self, chat: str | None) -> str | None:
        """A chat parameter of the proto's checks (`messages[3].tool_calls[0].function.arguments`)
        as this body names it (`input[5].arguments`)."""
        if not chat:
            return chat
        if chat in _FIXED:
            return _FIXED[chat]
        if m := _MESSAGE.match(chat):
            i, rest = int(m[1]), m[2]
            if i >= len(self.message_params):
                return chat
            base = self.message_params[i]
            if not base.startswith("input["):  # instructions, previous_response_id
                return base
            if c := _CALL.match(rest):
                call = self.call_params.get((i, int(c[1])))
                return call + _CALL_SUFFIX.get(c[2], c[2]) if call else base
            return base + {".tool_call_id": ".call_id"}.get(rest, rest)
        if m := _TOOL.match(chat):
            i, rest = int(m[1]), m[2]
            if i >= len(self.tool_params):
                return chat
            return self.tool_params[i] + _TOOL_SUFFIX.get(rest, rest)
        if m := _ALLOWED.match(chat):
            k = int(m[1])
            base = (
                self.allowed_params[k]
                if k < len(self.allowed_params)
                else f"tool_choice.tools[{k}]"
            )
            return base + m[2]
        return chat

    def translate(self, err: RequestError) -> RequestError:
        """The same error with this body's parameter names, in `param` and in its message."""
        param = self.param(err.param)

        def sub(m: re.Match) -> str:
            token = m[0]
            if token == "'messages'":
                return "'input'"
            return self.param(token) or token

        message = _IN_MESSAGE.sub(sub, err.message)
        if param == err.param and message == err.message:
            return err
        return RequestError(
            message,
            param=param,
            code=err.code,
            status=err.status,
            type=err.type,
            retry_after=err.retry_after,
        )


# -- the Responses-only fields -----------------------------------------------------------------
def check_request(req: ResponseCreateRequest) -> None:
    """Refuse what toolwire would otherwise silently ignore or half-serve (request.py's table)."""
    if req.model_extra:
        name = next(iter(req.model_extra))
        raise unsupported(name, f"Unrecognized request argument supplied: {name}")
    refused = [
        ("background", bool(req.background), "background responses are not supported"),
        (
            "background_options",
            req.background_options is not None,
            "background_options is not supported (no background responses)",
        ),
        (
            "conversation",
            req.conversation is not None,
            "conversation objects are not supported; continue a conversation with "
            "previous_response_id or by sending its items in input",
        ),
        (
            "prompt",
            req.prompt is not None,
            "prompt templates are not supported; send instructions and input",
        ),
        (
            "context_management",
            bool(req.context_management),
            "context_management (server-side compaction) is not supported",
        ),
        ("moderation", req.moderation is not None, "moderation is not supported"),
        ("top_logprobs", bool(req.top_logprobs), "top_logprobs is not supported"),
    ]
    for param, bad, why in refused:
        if bad:
            raise unsupported(param, why)
    if req.truncation not in (None, "disabled"):
        if req.truncation == "auto":
            raise unsupported_value(
                "truncation",
                "truncation 'auto' is not supported: an input longer than the context is "
                "refused; use 'disabled' or leave it out",
            )
        raise invalid_value("truncation", f"{req.truncation!r} is not one of auto, disabled")
    if req.service_tier not in (None, *SERVICE_TIERS):
        raise unsupported_value(
            "service_tier",
            f"service_tier {req.service_tier!r} is not supported; toolwire serves one tier "
            "('auto' or 'default')",
        )
    if (req.prompt_cache_options or {}).get("prewarm") is True:
        raise unsupported_value(
            "prompt_cache_options.prewarm", "prewarming without generating is not supported"
        )
    if req.stream_options is not None:
        if not req.stream:
            raise RequestError(
                "stream_options is only allowed when stream is true", param="stream_options"
            )
        if req.stream_options.include_obfuscation:
            raise unsupported_value(
                "stream_options.include_obfuscation",
                "stream obfuscation is not supported; toolwire sends no obfuscation padding",
            )
    for i, name in enumerate(req.include or []):
        if name == "message.output_text.logprobs":
            raise unsupported_value(f"include[{i}]", "logprobs are not supported")
        if name not in INCLUDABLE:
            raise invalid_value(f"include[{i}]", f"{name!r} is not a known includable")
    _check_metadata(req.metadata)
    for param, value in (
        ("text.verbosity", req.text.verbosity if req.text else None),
        ("verbosity", req.verbosity),
    ):
        if value in (None, "medium"):
            continue
        if value in ("low", "high"):
            raise unsupported_value(
                param,
                f"verbosity {value!r} is not supported: open models have no verbosity "
                "control; leave it out or use 'medium'",
            )
        raise invalid_value(param, f"{value!r} is not one of low, medium, high")
    _check_reasoning(req)


def _check_metadata(metadata: dict[str, str] | None) -> None:
    if not metadata:
        return
    if len(metadata) > 16:
        raise invalid_value("metadata", f"at most 16 pairs; got {len(metadata)}")
    for key, value in metadata.items():
        if len(key) > 64:
            raise invalid_value("metadata", f"key {key[:20]!r}... is longer than 64 characters")
        if len(value) > 512:
            raise invalid_value(f"metadata.{key}", "a value is at most 512 characters")


def _check_reasoning(req: ResponseCreateRequest) -> None:
    r = req.reasoning
    if r is None:
        return
    for param, value in (("summary", r.summary), ("generate_summary", r.generate_summary)):
        if value in (None, "auto", "none"):
            continue
        if value in ("concise", "detailed"):
            raise unsupported_value(
                f"reasoning.{param}",
                f"reasoning summaries are not supported ({value!r}): toolwire returns the "
                "reasoning itself as the reasoning item's content; use 'auto' or leave it out",
            )
        raise invalid_value(
            f"reasoning.{param}", f"{value!r} is not one of auto, concise, detailed"
        )
    if r.context == "all_turns":
        raise unsupported_value(
            "reasoning.context",
            "reasoning.context 'all_turns' is not supported: the model's chat template decides "
            "whether earlier turns' reasoning is shown; use 'auto' or 'current_turn'",
        )
    if r.context not in (None, "auto", "current_turn"):
        raise invalid_value(
            "reasoning.context", f"{r.context!r} is not one of auto, current_turn, all_turns"
        )
    if r.mode not in (None, "standard"):
        raise unsupported_value("reasoning.mode", f"reasoning mode {r.mode!r} is not supported")


# -- messages ----------------------------------------------------------------------------------
def _at(param: str, suffix: str) -> str:
    """A field of the item at `param`: `input[3]` + `.call_id`; a stored item of the history
    is named by previous_response_id alone."""
    return param + suffix if param.startswith("input") else param


def _text(content: Any, param: str, key: str, assistant: bool = False) -> tuple[str, str | None]:
    """(text, refusal) of a string or a list of parts; any other part is refused by name."""
    if isinstance(content, str):
        return content, None
    texts, refusals = [], []
    for j, part in enumerate(content):
        if isinstance(part, InputText | OutputText):
            texts.append(part.text)
        elif isinstance(part, RefusalPart) and assistant:
            refusals.append(part.refusal)
        else:
            raise unsupported(
                _at(param, f".{key}[{j}].type"),
                f"content parts of type {part.type!r} are not supported here; only text",
            )
    return "".join(texts), "".join(refusals) if refusals else None


def _reasoning_text(item: ReasoningItem, param: str) -> str:
    if item.encrypted_content:
        try:
            return decode_reasoning(item.encrypted_content)
        except ValueError as e:
            raise invalid_value(
                _at(param, ".encrypted_content"),
                f"{e}; only reasoning this server wrote can be sent back",
            ) from None
    return "".join(c.text for c in item.content or [])


_REASONING, _CONTENT, _CALLS = 0, 1, 2  # the order of an assistant message's parts


class _Conversation:
    """Items in order into ChatMessages, with the body path each came from."""

    def __init__(self) -> None:
        self.messages: list[common.ChatMessage] = []
        self.params: list[str] = []
        self.call_params: dict[tuple[int, int], str] = {}
        self.calls: dict[str, str] = {}  # call_id -> its item's path
        self.answered: set[str] = set()
        self.group: common.ChatMessage | None = None
        self.stage = _REASONING

    def add(self, role: str, param: str, **fields: Any) -> common.ChatMessage:
        self.group = None
        msg = common.ChatMessage(role=role, **fields)
        self.messages.append(msg)
        self.params.append(param)
        return msg

    def assistant(self, param: str, stage: int) -> common.ChatMessage:
        """The assistant message an item at `stage` joins: the open one while the parts come in
        order (reasoning, then content, then calls), else a new one."""
        if self.group is None or stage < self.stage or (stage == self.stage < _CALLS):
            self.group = self.add("assistant", param)
        self.stage = stage
        return self.group

    def item(self, item: Any, param: str) -> None:
        if isinstance(item, ReasoningItem):
            text = _reasoning_text(item, param)
            msg = self.assistant(param, _REASONING)
            if text:
                msg.reasoning_content = text
        elif isinstance(item, MessageItem) and item.role == "assistant":
            text, refusal = _text(item.content, param, "content", assistant=True)
            msg = self.assistant(param, _CONTENT)
            msg.content = text
            if refusal is not None:
                msg.refusal = refusal
        elif isinstance(item, MessageItem):
            self.add(item.role, param, content=_text(item.content, param, "content")[0])
        elif isinstance(item, FunctionCallItem | CustomToolCallItem):
            self.call(item, param)
        elif isinstance(item, FunctionCallOutputItem | CustomToolCallOutputItem):
            kind = "function" if isinstance(item, FunctionCallOutputItem) else "custom tool"
            if not item.call_id:
                raise RequestError(
                    f"'{_at(param, '.call_id')}' is required",
                    param=_at(param, ".call_id"),
                    code=ErrorCode.MISSING_REQUIRED_PARAMETER,
                )
            if item.call_id not in self.calls:
                raise RequestError(
                    f"No tool call found for {kind} call output with call_id {item.call_id!r}.",
                    param=_at(param, ".call_id"),
                )
            self.answered.add(item.call_id)
            text = _text(item.output, param, "output")[0]
            self.add("tool", param, tool_call_id=item.call_id, content=text)
        else:
            assert isinstance(item, OtherItem), item
            hosted = " (a hosted tool's item: toolwire runs no hosted tools)"
            raise unsupported(
                _at(param, ".type"),
                f"input items of type {item.type!r} are not supported"
                + (hosted if item.type in HOSTED_ITEMS else ""),
            )

    def call(self, item: FunctionCallItem | CustomToolCallItem, param: str) -> None:
        if item.async_:
            raise unsupported(_at(param, ".async"), "asynchronous tool calls are not supported")
        name = flat_name(item.namespace, item.name) if item.namespace else item.name
        msg = self.assistant(param, _CALLS)
        if isinstance(item, CustomToolCallItem):
            call = common.ToolCall(
                id=item.call_id,
                type="custom",
                custom=common.CustomCall(name=name, input=item.input),
            )
        else:
            call = common.ToolCall(
                id=item.call_id,
                type="function",
                function=common.FunctionCall(name=name, arguments=item.arguments),
            )
        self.call_params[(len(self.messages) - 1, len(msg.tool_calls))] = param
        msg.tool_calls.append(call)
        self.calls[item.call_id] = param

    def check_answered(self) -> None:
        for call_id, param in self.calls.items():
            if call_id not in self.answered:
                raise RequestError(
                    f"No tool output found for the call with call_id {call_id!r}.",
                    param=_at(param, ".call_id"),
                )

    def current_turn_only(self) -> None:
        """reasoning.context "current_turn": reasoning before the last user message out."""
        last_user = max((i for i, m in enumerate(self.messages) if m.role == "user"), default=-1)
        for m in self.messages[:last_user]:
            m.ClearField("reasoning_content")


def _stored_item(d: Any, param: str) -> Any:
    try:
        return _ITEM.validate_python(d)
    except pydantic.ValidationError:
        raise RequestError(
            f"a stored item ({param}) could not be read", status=500, type="server_error"
        ) from None


def _items(
    req: ResponseCreateRequest,
    history: Sequence[dict[str, Any]],
    resolve_item: Callable[[str], dict[str, Any] | None] | None,
):
    """(body path, item) for the history, then the input, item references resolved."""
    pairs: list[tuple[str, Any]] = [
        ("previous_response_id", _stored_item(d, "previous_response_id")) for d in history
    ]
    if isinstance(req.input, str):
        pairs.append(("input", MessageItem(role="user", content=req.input)))
    else:
        pairs += [(f"input[{i}]", item) for i, item in enumerate(req.input)]
    for path, item in pairs:
        if isinstance(item, ItemReference):
            found = resolve_item(item.id) if resolve_item is not None else None
            if found is None:
                raise RequestError(
                    f"Item with id '{item.id}' not found.",
                    param=_at(path, ".id"),
                    code=ErrorCode.NOT_FOUND,
                    status=404,
                )
            item = _stored_item(found, path)
            if isinstance(item, ItemReference):
                raise invalid_value(_at(path, ".id"), "the item it names is itself a reference")
        yield path, item


# -- the request -------------------------------------------------------------------------------
def to_chat(
    req: ResponseCreateRequest,
    history: Sequence[dict[str, Any]] = (),
    *,
    resolve_item: Callable[[str], dict[str, Any] | None] | None = None,
    drop_hosted_tools: bool = False,
    tool_format: str | None = None,
) -> tuple[chat_pb2.ChatCompletionRequest, Turn]:
    """The run's proto and the Turn. `history`: previous_response_id's stored items, oldest
    first; `resolve_item(id)`: a stored item for an item_reference (None: not found);
    `tool_format`: the served format's name (Orchestrator.tool_format), so that a function
    tool without `strict` is strict only where that format can enforce it exactly."""
    check_request(req)
    tools = read_tools(req, drop_hosted_tools, tool_format)
    out = chat_pb2.ChatCompletionRequest(model=req.model)
    conv = _Conversation()
    if req.instructions:
        conv.add("system", "instructions", content=req.instructions)
    for path, item in _items(req, history, resolve_item):
        conv.item(item, path)
    conv.check_answered()
    if req.reasoning is not None and req.reasoning.context == "current_turn":
        conv.current_turn_only()
    out.messages.extend(conv.messages)
    out.tools.extend(tools.protos)
    choice_echo, allowed_params = read_tool_choice(req, tools, out.tool_choice, drop_hosted_tools)
    if req.parallel_tool_calls is not None:
        out.parallel_tool_calls = req.parallel_tool_calls
    if req.reasoning is not None and req.reasoning.effort is not None:
        out.reasoning_effort = req.reasoning.effort
    text_echo = _text_format(req, out.response_format)
    for key in ("temperature", "top_p"):
        if getattr(req, key) is not None:
            setattr(out, key, getattr(req, key))
    if req.max_output_tokens is not None:
        out.max_completion_tokens = req.max_output_tokens
    turn = Turn(
        tools=tools.echo,
        tool_choice=choice_echo,
        parallel_tool_calls=req.parallel_tool_calls is not False,
        text=text_echo,
        namespaces=tools.namespaces,
        dropped_tools=tuple(tools.dropped),
        encrypted_reasoning=ENCRYPTED_REASONING in (req.include or []),
        message_params=tuple(conv.params),
        call_params=conv.call_params,
        tool_params=tuple(tools.params),
        allowed_params=allowed_params,
    )
    try:
        # The orchestrator runs these again, with the sizes and the schemas (its errors:
        # Turn.translate).
        check_conversation(out)
        check_sampling(out)
    except RequestError as e:
        raise turn.translate(e) from None
    return out, turn


def _text_format(req: ResponseCreateRequest, rf: common.ResponseFormat) -> dict[str, Any]:
    """text.format into the proto's response_format; returns the `text` echo."""
    f = req.text.format if req.text is not None else None
    verbosity = (req.text.verbosity if req.text else None) or req.verbosity or "medium"
    if f is None:
        return {"format": {"type": "text"}, "verbosity": verbosity}
    if isinstance(f, OtherFormat):
        raise invalid_value(
            "text.format.type", f"{f.type!r} is not one of text, json_schema, json_object"
        )
    echo = f.model_dump(by_alias=True, exclude_none=True)
    if isinstance(f, TextFormatJSONSchema):
        rf.type, rf.name = "json_schema", f.name
        rf.schema_json = json.dumps(f.schema_)
        rf.strict = bool(f.strict)  # the SDK: strict adherence "if set to true"
        echo["strict"] = rf.strict
    elif isinstance(f, TextFormatJSONObject):
        rf.type = "json_object"
    return {"format": echo, "verbosity": verbosity}
