"""Tool-format registry: one module per model family (renderer, constraint, extractor).

Formats are named the way users know them (vLLM's --tool-call-parser names): hermes,
llama3_json, mistral, pythonic, deepseek_v3, deepseek_v31, deepseek_v32, deepseek_v4 (DSML),
harmony (gpt-oss; vLLM's `openai`), qwen3_coder, glm45, glm47, kimi_k2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import CallDelta, Delta, StreamingExtractor, ToolFormat
from .deepseek_v3 import CALLS_BEGIN, SEP, DeepSeekV3Format
from .deepseek_v31 import V3_HINT, DeepSeekV31Format
from .dsml import DSML, V4_TOKEN, DsmlFormat
from .glm import GLM47_HINT, GlmFormat
from .harmony import HarmonyFormat
from .hermes import HermesFormat
from .inputs import Tool, ToolChoice
from .kimi_k2 import SECTION_BEGIN, KimiK2Format
from .llama3_json import PYTHON_TAG, Llama3JsonFormat
from .mistral import MistralFormat, starts_with_space
from .pythonic import PythonicFormat
from .qwen3_coder import Qwen3CoderFormat


def _vocab(tokenizer: Any) -> set[str]:
    if tokenizer is None:
        return set()
    return set(tokenizer.get_vocab()) | set(getattr(tokenizer, "all_special_tokens", []))


def _template(tokenizer: Any) -> str:
    return (getattr(tokenizer, "chat_template", None) or "") if tokenizer is not None else ""


FORMATS: dict[str, Callable[[Any], ToolFormat]] = {
    "hermes": lambda tok: HermesFormat(),
    "llama3_json": lambda tok: Llama3JsonFormat(python_tag=PYTHON_TAG in _vocab(tok)),
    "mistral": lambda tok: MistralFormat(
        args_token=tok is None or "[ARGS]" in _vocab(tok) or "[ARGS]" in _template(tok),
        list_space=starts_with_space(tok),
    ),
    "pythonic": lambda tok: PythonicFormat(),
    "deepseek_v3": lambda tok: DeepSeekV3Format(),
    "deepseek_v31": lambda tok: DeepSeekV31Format(),
    "deepseek_v32": lambda tok: DsmlFormat(v4=False),
    "deepseek_v4": lambda tok: DsmlFormat(v4=True),
    "kimi_k2": lambda tok: KimiK2Format(),
    "harmony": lambda tok: HarmonyFormat(),
    "qwen3_coder": lambda tok: Qwen3CoderFormat(),
    "glm45": lambda tok: GlmFormat(newline=True),
    "glm47": lambda tok: GlmFormat(newline=False),
}


def get_format(name: str, tokenizer: Any = None) -> ToolFormat:
    """The named format, fitted to the tokenizer's special tokens where the family varies."""
    try:
        factory = FORMATS[name]
    except KeyError:
        raise ValueError(
            f"unknown tool format {name!r}; known: {', '.join(sorted(FORMATS))}"
        ) from None
    return factory(tokenizer)


def detect_format(tokenizer: Any) -> str | None:
    """The tool format a model writes, judged from its chat template and special tokens."""
    template, vocab = _template(tokenizer), _vocab(tokenizer)
    if "<|channel|>" in template or "<|channel|>" in vocab:  # gpt-oss: Harmony
        return "harmony"
    if DSML in template or DSML in vocab:  # DeepSeek V3.2 / V4 (DSML calls, no template)
        if "function_calls>" in template:
            return "deepseek_v32"
        return "deepseek_v4" if "tool_calls>" in template or V4_TOKEN in vocab else "deepseek_v32"
    if CALLS_BEGIN in template or CALLS_BEGIN in vocab:
        # V3.1 writes NAME<｜tool▁sep｜> (no `function` slot): its template shows the separator
        # without the slot; a vocabulary alone (no template) is V3's.
        if SEP in template and V3_HINT not in template:
            return "deepseek_v31"
        return "deepseek_v3"
    if SECTION_BEGIN in template or SECTION_BEGIN in vocab:  # Kimi K2 / K2.5
        return "kimi_k2"
    if "[TOOL_CALLS]" in template or "[TOOL_CALLS]" in vocab:
        return "mistral"
    if "func_name1(" in template:  # Llama 3.2 / 4 templates teach the pythonic form
        return "pythonic"
    if PYTHON_TAG in vocab or "ipython" in template:
        return "llama3_json"
    if "<arg_key>" in template or "<arg_key>" in vocab:  # GLM: raw values in arg_key/arg_value
        return "glm47" if GLM47_HINT in template else "glm45"
    if "<parameter=" in template:  # Qwen3-Coder / Qwen3.5 / Qwen3.6: <function=...> calls
        return "qwen3_coder"
    if "<tool_call>" in template or "<tool_call>" in vocab:
        return "hermes"
    # ChatML models without tool support (the embedded SmolLM2) take hermes, the format their
    # family's tool-trained successors use.
    if "<|im_start|>" in template:
        return "hermes"
    return None


__all__ = [
    "CallDelta",
    "Delta",
    "FORMATS",
    "StreamingExtractor",
    "Tool",
    "ToolChoice",
    "ToolFormat",
    "detect_format",
    "get_format",
]
