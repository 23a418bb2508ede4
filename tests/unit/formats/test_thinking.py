"""reasoning_effort as the model's thinking switch: read from the chat template's own
statements, passed to it when it renders, refused (400 naming reasoning_effort) where the model
has no switch that would honour it."""

from __future__ import annotations

import copy

import pytest

from services.template.server import TemplateServicer
from toolwire.errors import RequestError
from toolwire.formats import get_format
from toolwire.formats.reasoning import NONE, STARTED
from toolwire.formats.thinking import template_kwargs, template_switch
from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.grpc_gen.template.v1 import template_pb2 as pb
from toolwire.request.checks import check_render

from .family_tokenizers import QWEN_TOKENS, family_tokenizer

# Qwen3's switch, as its template writes it: thinking unless enable_thinking is false, when the
# generation prompt closes an empty think block.
QWEN3_SWITCH = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}"
)
ASK = [common.ChatMessage(role="user", content="Hi")]


def _qwen3(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.add_special_tokens({"additional_special_tokens": QWEN_TOKENS + ["<think>", "</think>"]})
    tok.chat_template = QWEN3_SWITCH
    return tok


def _render(tok, fmt_name, effort):
    servicer = TemplateServicer(tok, get_format(fmt_name, tok), "m", 8192, len(tok))
    req = pb.RenderChatRequest(model="m", messages=ASK)
    if effort is not None:
        req.reasoning_effort = effort
    return servicer.render(req)


@pytest.mark.parametrize(
    "template,switch",
    [
        (QWEN3_SWITCH, "enable_thinking"),
        ("{% if not thinking is defined %}{% set thinking = false %}{% endif %}x", "thinking"),
        (
            "{%- if reasoning_effort is defined %}{{ reasoning_effort }}{% endif %}",
            "reasoning_effort",
        ),
        ("{{ 'Think about enable_thinking' }} no statement reads it", None),
        ("{% if m.thinking %}{% endif %}", None),  # a message's field, not a switch
    ],
)
def test_the_switch_is_read_from_the_templates_statements(template, switch):
    assert template_switch(template) == switch


def test_thinking_switched_off_and_on(tokenizer):
    tok = _qwen3(tokenizer)
    off = _render(tok, "hermes", "none")
    assert off.prompt_text.endswith("<think>\n\n</think>\n\n") and off.reasoning == NONE
    on = _render(tok, "hermes", "low")  # an on/off model thinks at every effort but none
    assert on.prompt_text.endswith("<think>\n") and on.reasoning == STARTED
    assert _render(tok, "hermes", None).prompt_text == on.prompt_text  # the template's default


def test_a_model_without_a_switch_refuses_an_effort(tokenizer):
    assert _render(tokenizer, "hermes", "none").reasoning == NONE  # it never thinks: served
    with pytest.raises(RequestError) as e:
        _render(tokenizer, "hermes", "high")
    assert e.value.param == "reasoning_effort"


def test_harmony_grades_its_reasoning(tokenizer):
    tok = family_tokenizer(tokenizer, "harmony")
    assert "Reasoning: medium" in _render(tok, "harmony", None).prompt_text
    assert "Reasoning: low" in _render(tok, "harmony", "low").prompt_text
    for effort in ("none", "minimal", "xhigh"):  # gpt-oss has low, medium and high only
        with pytest.raises(RequestError) as e:
            template_kwargs(tok, effort, own_switch="reasoning_effort")
        assert e.value.param == "reasoning_effort"


def test_an_unknown_effort_is_a_400_naming_it():
    with pytest.raises(RequestError) as e:
        check_render(pb.RenderChatRequest(model="m", messages=ASK, reasoning_effort="extreme"))
    assert e.value.param == "reasoning_effort" and e.value.code == "invalid_value"
