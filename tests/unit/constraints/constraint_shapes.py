"""Every shape of constraint toolwire builds: each tool format (and its variants), each
tool_choice mode, parallel calls on and off, each reasoning mode, with and without a
response_format, and the tool-less ones. Tools are strict and not, with and without parameters."""

from __future__ import annotations

import itertools
import json

from toolwire.constraints.build import build_constraint
from toolwire.formats import Tool, ToolChoice
from toolwire.formats.deepseek_v3 import DeepSeekV3Format
from toolwire.formats.deepseek_v31 import DeepSeekV31Format
from toolwire.formats.dsml import DsmlFormat
from toolwire.formats.glm import GlmFormat
from toolwire.formats.harmony import HarmonyFormat
from toolwire.formats.hermes import HermesFormat
from toolwire.formats.kimi_k2 import KimiK2Format
from toolwire.formats.llama3_json import Llama3JsonFormat
from toolwire.formats.mistral import MistralFormat
from toolwire.formats.pythonic import PythonicFormat
from toolwire.formats.qwen3_coder import Qwen3CoderFormat
from toolwire.formats.reasoning import NONE, OPTIONAL, STARTED
from toolwire.grpc_gen.common.v1 import common_pb2 as common

FORMATS = {
    "hermes": HermesFormat(),
    "llama3_json": Llama3JsonFormat(python_tag=False),
    "llama3_json+python_tag": Llama3JsonFormat(python_tag=True),
    "mistral": MistralFormat(args_token=True),
    "mistral-no-args-token": MistralFormat(args_token=False),
    "pythonic": PythonicFormat(),
    "deepseek_v3": DeepSeekV3Format(),
    "harmony": HarmonyFormat(),
    "qwen3_coder": Qwen3CoderFormat(),
    "glm45": GlmFormat(newline=True),
    "glm47": GlmFormat(newline=False),
    "deepseek_v31": DeepSeekV31Format(),
    "deepseek_v32": DsmlFormat(v4=False),
    "deepseek_v4": DsmlFormat(v4=True),
    "kimi_k2": KimiK2Format(),
}
TOOLS = [
    Tool(
        "get_weather",
        "Weather in a city.",
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["city"],
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        },
        strict=True,
    ),
    Tool("get_time", "The time.", None),
    Tool(
        "search",
        "Search.",
        {"type": "object", "properties": {"q": {"type": "string"}, "limit": {"type": "integer"}}},
    ),
]
RESPONSE = common.ResponseFormat(
    type="json_schema",
    strict=True,
    schema_json=json.dumps(
        {
            "type": "object",
            "properties": {"answer": {"type": "string"}},
            "required": ["answer"],
            "additionalProperties": False,
        }
    ),
)
MODES = {
    "auto": ToolChoice("auto"),
    "none": ToolChoice("none"),
    "required": ToolChoice("required"),
    "named": ToolChoice("named", "get_weather"),
}
REASONING = {"no-think": NONE, "think-optional": OPTIONAL, "think-started": STARTED}


def shapes() -> list[dict]:
    """[{id, kind, text}] for every combination (None constraints left out)."""
    out = []
    for (fname, fmt), (mode, choice), parallel, (rname, reasoning), rf in itertools.product(
        FORMATS.items(), MODES.items(), (False, True), REASONING.items(), (False, True)
    ):
        c = build_constraint(
            fmt,
            TOOLS,
            choice,
            parallel,
            RESPONSE if rf else common.ResponseFormat(),
            reasoning,
            True,
        )
        out.append(
            _shape(
                f"{fname}/{mode}/parallel={parallel}/{rname}/{'json_schema' if rf else 'text'}", c
            )
        )
    for (rname, reasoning), rf, results in itertools.product(
        REASONING.items(), ("text", "json_object", "json_schema"), (False, True)
    ):
        response = RESPONSE if rf == "json_schema" else common.ResponseFormat(type=rf)
        c = build_constraint(
            HermesFormat(), [], ToolChoice("auto"), True, response, reasoning, results
        )
        if c is not None:
            out.append(_shape(f"no-tools/{rf}/{rname}/results={results}", c))
    return out


def _shape(name: str, c: common.Constraint) -> dict:
    kind = c.WhichOneof("kind")
    return {"id": name, "kind": kind, "text": getattr(c, kind)}
