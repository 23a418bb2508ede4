"""One request check for both surfaces: the same invalid request, sent over REST and over the
gRPC ChatService, is refused with the same `param` and `code`.

The gRPC request is built here from the REST body by a few lines of this test (not by the
gateway's conversion), so each surface is reached the way its own clients reach it.
"""

from __future__ import annotations

import json

import grpc
import httpx
import pytest

from tests.tools_fixtures import WEATHER
from toolwire.grpc_gen.chat.v1 import chat_pb2, chat_pb2_grpc
from toolwire.grpc_gen.common.v1 import common_pb2 as common

SAY = [{"role": "user", "content": "Hi"}]
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": "[1, 2]"},
}
STRICT_NOT = {"type": "object", "not": {"required": ["a"]}}
_MODES = {
    "auto": common.ToolChoice.MODE_AUTO,
    "none": common.ToolChoice.MODE_NONE,
    "required": common.ToolChoice.MODE_REQUIRED,
}


def _tool(name: str, parameters: dict | None = None, strict: bool = False) -> dict:
    fn = {"name": name, "strict": strict}
    if parameters is not None:
        fn["parameters"] = parameters
    return {"type": "function", "function": fn}


def _allowed(mode: str, *names: str) -> dict:
    tools = [{"type": "function", "function": {"name": n}} for n in names]
    return {"type": "allowed_tools", "allowed_tools": {"mode": mode, "tools": tools}}


# (id, what the REST body adds, the status, the param and code both surfaces must answer)
CASES = [
    (
        "duplicate-names",
        {"tools": [WEATHER, WEATHER], "tool_choice": "required"},
        400,
        "tools[1].function.name",
        None,
    ),
    (
        "tool-without-call-id",
        {"messages": SAY + [{"role": "tool", "content": "x"}]},
        400,
        "messages[1].tool_call_id",
        None,
    ),
    (
        "named-not-in-tools",
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        400,
        "tool_choice",
        None,
    ),
    ("choice-without-tools", {"tool_choice": "required"}, 400, "tool_choice", None),
    (
        "bad-function-name",
        {"tools": [_tool("bad name!")]},
        400,
        "tools[0].function.name",
        "invalid_value",
    ),
    (
        "unknown-role",
        {"messages": [{"role": "wizard", "content": "hi"}]},
        400,
        "messages[0].role",
        "invalid_value",
    ),
    ("no-messages", {"messages": []}, 400, "messages", "invalid_value"),
    ("reasoning-effort", {"reasoning_effort": "extreme"}, 400, "reasoning_effort", "invalid_value"),
    # The embedded model does not think: no effort but none is served (formats/thinking.py).
    (
        "reasoning-effort-unsupported",
        {"reasoning_effort": "high"},
        400,
        "reasoning_effort",
        "unsupported_value",
    ),
    ("temperature", {"temperature": 3}, 400, "temperature", "invalid_value"),
    ("top-p", {"top_p": 0}, 400, "top_p", "invalid_value"),
    ("zero-max-tokens", {"max_tokens": 0}, 400, "max_tokens", "invalid_value"),
    (
        "arguments-not-an-object",
        {
            "messages": SAY
            + [
                {"role": "assistant", "content": None, "tool_calls": [CALL]},
                {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
            ]
        },
        400,
        "messages[1].tool_calls[0].function.arguments",
        None,
    ),
    (
        "image-part",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
                }
            ]
        },
        400,
        "messages[0].content[0].type",
        "unsupported_parameter",
    ),
    (
        "strict-unenforceable",
        {"tools": [_tool("f", STRICT_NOT, strict=True)]},
        400,
        "tools[0].function.parameters",
        "unsupported_schema_keyword",
    ),
    (
        "response-format-unenforceable",
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "strict": True, "schema": STRICT_NOT},
            }
        },
        400,
        "response_format.json_schema.schema",
        "unsupported_schema_keyword",
    ),
    ("too-many-stops", {"stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "too_many_stop_sequences"),
    ("empty-stop", {"stop": ["a", ""]}, 400, "stop[1]", None),
    ("unknown-model", {"model": "no-such-model"}, 404, "model", "model_not_found"),
    (
        "allowed-not-in-tools",
        {"tools": [WEATHER], "tool_choice": _allowed("required", "nope")},
        400,
        "tool_choice.allowed_tools.tools[0]",
        "invalid_value",
    ),
    (
        "allowed-empty",
        {"tools": [WEATHER], "tool_choice": _allowed("auto")},
        400,
        "tool_choice.allowed_tools.tools",
        "invalid_value",
    ),
    (
        "allowed-mode-none",
        {"tools": [WEATHER], "tool_choice": _allowed("none", "get_weather")},
        400,
        "tool_choice.allowed_tools.mode",
        "invalid_value",
    ),
]


def _message(m: dict) -> common.ChatMessage:
    msg = common.ChatMessage(role=m["role"])
    content = m.get("content")
    if isinstance(content, str):
        msg.content = content
    for part in content if isinstance(content, list) else []:
        msg.content_parts.append(common.ContentPart(type=part["type"], text=part.get("text", "")))
    if "tool_call_id" in m:
        msg.tool_call_id = m["tool_call_id"]
    for c in m.get("tool_calls") or []:
        msg.tool_calls.append(
            common.ToolCall(
                id=c["id"],
                type=c["type"],
                function=common.FunctionCall(
                    name=c["function"]["name"], arguments=c["function"]["arguments"]
                ),
            )
        )
    return msg


def grpc_request(body: dict) -> chat_pb2.ChatCompletionRequest:
    """The REST body as a ChatService client writes it."""
    req = chat_pb2.ChatCompletionRequest(
        model=body["model"], messages=[_message(m) for m in body["messages"]]
    )
    for t in body.get("tools", []):
        fn = t["function"]
        req.tools.append(
            common.FunctionTool(
                name=fn["name"],
                description=fn.get("description", ""),
                strict=fn.get("strict", False),
                parameters_json=json.dumps(fn["parameters"]) if "parameters" in fn else "",
            )
        )
    choice = body.get("tool_choice")
    if isinstance(choice, str):
        req.tool_choice.mode = _MODES[choice]
    elif choice is not None and choice["type"] == "allowed_tools":
        allowed = choice["allowed_tools"]
        req.tool_choice.allowed_tools.mode = _MODES[allowed["mode"]]
        req.tool_choice.allowed_tools.tool_names.extend(
            t["function"]["name"] for t in allowed["tools"]
        )
    elif choice is not None:
        req.tool_choice.function_name = choice["function"]["name"]
    if "response_format" in body:
        rf = body["response_format"]
        req.response_format.type = rf["type"]
        if "json_schema" in rf:
            req.response_format.name = rf["json_schema"]["name"]
            req.response_format.strict = rf["json_schema"].get("strict", False)
            req.response_format.schema_json = json.dumps(rf["json_schema"]["schema"])
    for key in ("temperature", "top_p", "reasoning_effort"):
        if key in body:
            setattr(req, key, body[key])
    if "max_tokens" in body:
        req.max_completion_tokens = body["max_tokens"]
    req.stop.extend(body.get("stop", []))
    return req


@pytest.fixture(scope="module")
def stub(stack):
    ch = grpc.insecure_channel(f"127.0.0.1:{stack.grpc_port}")
    yield chat_pb2_grpc.ChatServiceStub(ch)
    ch.close()


def _rest(stack, body: dict) -> tuple[int, str | None, str | None]:
    r = httpx.post(
        f"{stack.base_url}/chat/completions",
        json=body,
        timeout=120,
        headers={"Authorization": f"Bearer {stack.api_key}"},
    )
    err = r.json().get("error") or {}
    return r.status_code, err.get("param"), err.get("code")


_STATUS = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404}


def _grpc(stack, stub, body: dict) -> tuple[int, str | None, str | None]:
    try:
        stub.CreateChatCompletion(
            grpc_request(body),
            timeout=120,
            metadata=(("authorization", f"Bearer {stack.api_key}"),),
        )
    except grpc.RpcError as e:
        md = dict(e.trailing_metadata() or ())
        return (
            _STATUS.get(e.code(), e.code().name),
            md.get("toolwire-param"),
            md.get("toolwire-code"),
        )
    return 200, None, None


@pytest.mark.parametrize(
    "extra,status,param,code", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_the_same_refusal_over_rest_and_grpc(stack, stub, extra, status, param, code):
    body = {"model": stack.model, "messages": SAY, "max_tokens": 4, **extra}
    assert _rest(stack, body) == (status, param, code)
    assert _grpc(stack, stub, body) == (status, param, code)
