"""The tools of a Responses API request, and its tool_choice, as the ChatCompletionRequest
proto carries them (to_chat.py builds the rest).

- A function tool keeps its name. `strict` omitted or null is Responses' default: strict when
  the schema is compatible (`default_strict`), else non-strict; nothing is rewritten.
- A namespace's tools are flattened to `<namespace>__<name>` (`flat_name`; `Tools.namespaces`
  maps them back).
- Hosted tools run on OpenAI's servers: a 400 naming `tools[i].type`, or left out and named in
  `Tools.dropped` with --drop-hosted-tools; a tool_choice that names one is a 400 either way.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from toolwire.constraints.build import NO_PARAMETERS
from toolwire.constraints.schemas import first_unsupported
from toolwire.errors import RequestError, invalid_value, unsupported
from toolwire.formats import get_format
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.vocabulary import ToolChoiceMode

from .request import (
    CustomTool,
    FunctionTool,
    NamespaceTool,
    ResponseCreateRequest,
    ToolChoiceAllowed,
    ToolChoiceCustom,
    ToolChoiceFunction,
    ToolChoiceHosted,
)

NAMESPACE_SEP = "__"
MAX_NAME = 64  # schema_checks.NAME_PATTERN's length
_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")

# Tool types OpenAI runs itself (or whose calls are items toolwire never writes).
HOSTED_TOOLS = frozenset(
    {
        "web_search",
        "web_search_2025_08_26",
        "web_search_preview",
        "web_search_preview_2025_03_11",
        "file_search",
        "image_generation",
        "code_interpreter",
        "computer",
        "computer_use",
        "computer_use_preview",
        "mcp",
        "local_shell",
        "shell",
        "apply_patch",
        "tool_search",
        "programmatic_tool_calling",
    }
)
_MODES = {
    ToolChoiceMode.AUTO: common.ToolChoice.MODE_AUTO,
    ToolChoiceMode.NONE: common.ToolChoice.MODE_NONE,
    ToolChoiceMode.REQUIRED: common.ToolChoice.MODE_REQUIRED,
}


# -- strict by default -------------------------------------------------------------------------
def openai_strict(schema: Any) -> bool:
    """Whether a schema already meets OpenAI's strict-mode rules: the root is an object, and
    every object schema in it sets additionalProperties false and requires all its
    properties."""
    return isinstance(schema, dict) and schema.get("type") == "object" and _strict_node(schema)


def _strict_node(s: Any) -> bool:
    if not isinstance(s, dict):
        return False
    t = s.get("type")
    if t == "object" or (isinstance(t, list) and "object" in t) or "properties" in s:
        props = s.get("properties") or {}
        if s.get("additionalProperties") is not False or not isinstance(props, dict):
            return False
        required = s.get("required", [])
        if not isinstance(required, list) or set(required) != set(props):
            return False
    subs: list[Any] = []
    for key in ("properties", "$defs", "definitions"):
        if isinstance(s.get(key), dict):
            subs += s[key].values()
    for key in ("anyOf", "prefixItems"):
        if isinstance(s.get(key), list):
            subs += s[key]
    if isinstance(s.get("items"), dict):
        subs.append(s["items"])
    return all(_strict_node(x) for x in subs)


@functools.lru_cache(maxsize=16)
def _format(name: str):
    try:
        return get_format(name)
    except ValueError:
        return None


def default_strict(parameters: dict[str, Any] | None, tool_format: str | None = None) -> bool:
    """A function tool's `strict` when the request omits it (or sends null). OpenAI: "Responses
    attempts to use strict validation when the schema is compatible, and falls back to
    non-strict validation otherwise" (SDK namespace_tool_param.py). OpenAI normalizes a schema
    into strict form (making optional fields required); toolwire rewrites nothing, so
    compatible means: the schema meets OpenAI's strict rules as sent, every keyword in it is one
    toolwire's constrained decoding enforces (constraints/schemas.py), and, given the served
    tool format, the format can write it exactly. No parameters: an empty object, strict."""
    schema = NO_PARAMETERS if parameters is None else parameters
    if not openai_strict(schema) or first_unsupported(schema) is not None:
        return False
    fmt = _format(tool_format) if tool_format else None
    return fmt is None or fmt.unenforceable(schema) is None


def flat_name(namespace: str, name: str) -> str:
    """A namespaced tool's name as the model sees it: `<namespace>__<name>`, or the two joined
    as they are where the namespace already ends with the separator (Codex names its MCP
    namespaces `mcp__<server>__`, and its tools were `mcp__<server>__<tool>` before namespaces).
    Turn.namespaces maps it back, so the join need not be reversible; a clash with another
    tool's name is refused by the duplicate-name check."""
    sep = "" if namespace.endswith(NAMESPACE_SEP) else NAMESPACE_SEP
    return f"{namespace}{sep}{name}"


# -- tools -------------------------------------------------------------------------------------
@dataclass
class Tools:
    protos: list[common.FunctionTool] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    echo: list[dict[str, Any]] = field(default_factory=list)
    namespaces: dict[str, tuple[str, str]] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)


def hosted_label(t: Any) -> str:
    label = getattr(t, "server_label", None) or getattr(t, "name", None)
    return f"{t.type}:{label}" if isinstance(label, str) else t.type


def _callers(t: FunctionTool | CustomTool, param: str) -> None:
    if t.async_:
        raise unsupported(f"{param}.async", "asynchronous tool calls are not supported")
    if t.allowed_callers is not None and "direct" not in t.allowed_callers:
        raise unsupported(
            f"{param}.allowed_callers",
            "a tool only programs may call (allowed_callers without 'direct') cannot be "
            "offered: toolwire has no programmatic tool calling",
        )


def _function(t: FunctionTool, name: str, param: str, fmt: str | None):
    _callers(t, param)
    strict = t.strict if t.strict is not None else default_strict(t.parameters, fmt)
    proto = common.FunctionTool(
        name=name,
        description=t.description or "",
        strict=strict,
        parameters_json=json.dumps(t.parameters) if t.parameters is not None else "",
    )
    echo = t.model_dump(by_alias=True, exclude_unset=True)
    echo.update(description=t.description, parameters=t.parameters, strict=strict)
    return proto, echo


def _custom(t: CustomTool, name: str, param: str):
    _callers(t, param)
    proto = common.FunctionTool(type="custom", name=name, description=t.description or "")
    if t.format is not None:
        proto.custom_format.type = t.format.type
        if t.format.type == "grammar":
            proto.custom_format.syntax = t.format.syntax
            proto.custom_format.definition = t.format.definition
    return proto, t.model_dump(by_alias=True, exclude_unset=True)


def read_tools(req: ResponseCreateRequest, drop_hosted: bool, fmt: str | None) -> Tools:
    out = Tools()
    for i, t in enumerate(req.tools or []):
        param = f"tools[{i}]"
        if isinstance(t, FunctionTool | CustomTool):
            proto, echo = (
                _function(t, t.name, param, fmt)
                if isinstance(t, FunctionTool)
                else _custom(t, t.name, param)
            )
            out.protos.append(proto)
            out.params.append(param)
            out.echo.append(echo)
        elif isinstance(t, NamespaceTool):
            inner_echo = []
            for j, inner in enumerate(t.tools):
                iparam = f"{param}.tools[{j}]"
                name = flat_name(t.name, inner.name)
                _check_flat(t.name, inner.name, param, iparam)
                proto, echo = (
                    _function(inner, name, iparam, fmt)
                    if isinstance(inner, FunctionTool)
                    else _custom(inner, name, iparam)
                )
                out.protos.append(proto)
                out.params.append(iparam)
                out.namespaces[name] = (t.name, inner.name)
                inner_echo.append(echo)
            out.echo.append(
                {"type": "namespace", "name": t.name, "description": t.description or ""}
                | {"tools": inner_echo}
            )
        elif t.type in HOSTED_TOOLS:
            if not drop_hosted:
                raise unsupported(
                    f"{param}.type",
                    f"toolwire cannot run hosted tools: {t.type!r} runs on OpenAI's servers. "
                    "Remove it, or start the gateway with --drop-hosted-tools to leave hosted "
                    "tools out",
                )
            out.dropped.append(hosted_label(t))
        else:
            raise invalid_value(
                f"{param}.type",
                f"{t.type!r} is not a tool type (function, custom, namespace, or a hosted type)",
            )
    return out


def _check_flat(namespace: str, name: str, param: str, iparam: str) -> None:
    """A namespaced name the tool checks would refuse, named where it is wrong."""
    if not _NAME.match(name):
        raise invalid_value(
            f"{iparam}.name", f"{name!r} must be letters, digits, underscores or dashes"
        )
    if not _NAME.match(namespace):
        raise invalid_value(
            f"{param}.name",
            f"{namespace!r} must be letters, digits, underscores or dashes: a namespace's "
            f"tools are named `<namespace>{NAMESPACE_SEP}<name>` for the model",
        )
    flat = flat_name(namespace, name)
    if len(flat) > MAX_NAME:
        raise invalid_value(
            f"{iparam}.name",
            f"the namespaced name {flat!r} is longer than {MAX_NAME} characters",
        )


def read_tool_choice(
    req: ResponseCreateRequest, tools: Tools, out: common.ToolChoice, drop_hosted: bool
):
    """The proto's tool_choice; returns (echo, the body path of each allowed tool name)."""
    choice = req.tool_choice
    dropped = (
        f" (the hosted tools were left out: {', '.join(tools.dropped)})" if tools.dropped else ""
    )
    if choice is None:
        return "auto", ()
    if isinstance(choice, str):
        if tools.protos:
            out.mode = _MODES[ToolChoiceMode(choice)]
        elif choice == "required":
            raise RequestError(
                f"tool_choice 'required' needs a tool to call, and none is offered{dropped}",
                param="tool_choice",
            )
        # auto or none with no tools: nothing to call either way
        return choice, ()
    if isinstance(choice, ToolChoiceHosted):
        raise unsupported(
            "tool_choice",
            f"tool_choice names the hosted tool type {choice.type!r}, which toolwire cannot "
            f"run{dropped}",
        )
    echo = choice.model_dump(by_alias=True, exclude_unset=True)
    if isinstance(choice, ToolChoiceFunction):
        out.function_name = choice.name
        return echo, ()
    if isinstance(choice, ToolChoiceCustom):
        out.custom_name = choice.name
        return echo, ()
    assert isinstance(choice, ToolChoiceAllowed)
    # An unknown mode stays unspecified: the check refuses it (tool_choice.mode).
    mode = ToolChoiceMode(choice.mode) if choice.mode in ("auto", "required") else None
    out.allowed_tools.mode = (
        _MODES.get(mode, common.ToolChoice.MODE_UNSPECIFIED)
        if mode
        else common.ToolChoice.MODE_UNSPECIFIED
    )
    kept, params = [], []
    for k, entry in enumerate(choice.tools):
        param = f"tool_choice.tools[{k}]"
        kind = entry.get("type")
        if kind in HOSTED_TOOLS:
            if not drop_hosted:
                raise unsupported(
                    param, f"names the hosted tool type {kind!r}, which toolwire cannot run"
                )
            continue  # left out with the tool itself
        if kind not in ("function", "custom"):
            raise invalid_value(f"{param}.type", f"{kind!r} is not one of function, custom")
        name, namespace = entry.get("name"), entry.get("namespace")
        if not isinstance(name, str):
            raise invalid_value(f"{param}.name", "a tool name is required")
        out.allowed_tools.tool_names.append(
            flat_name(namespace, name) if isinstance(namespace, str) else name
        )
        kept.append(entry)
        params.append(param)
    if choice.tools and not kept:
        raise RequestError(
            f"every tool tool_choice allows is a hosted tool{dropped}", param="tool_choice.tools"
        )
    return echo | {"tools": kept}, tuple(params)
