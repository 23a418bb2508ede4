"""Golden renderings of the hermes format on the embedded model's own (ChatML) template."""

from __future__ import annotations

from toolwire.formats import Tool, get_format

WEATHER = Tool(
    "get_weather",
    "Get the weather.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)

GOLDEN = (
    "<|im_start|>system\n"
    "Be brief.\n\n# Tools\n\nYou may call one or more functions to assist with the user query."
    "\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    '{"type": "function", "function": {"name": "get_weather", "description": "Get the weather.",'
    ' "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required":'
    ' ["city"]}}}\n</tools>\n\nFor each function call, return a json object with function name'
    " and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
    "<|im_start|>user\nWeather in Paris and Rome?<|im_end|>\n"
    "<|im_start|>assistant\n"
    'Let me call get_weather({"city": "Paris"}). Let me call get_weather({"city": "Rome"}).'
    "<|im_end|>\n"
    "<|im_start|>user\nThe get_weather tool returned: 14C\nThe get_weather tool returned: 18C"
    "<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def _call(i, city):
    return {
        "id": f"call_{i}",
        "type": "function",
        "function": {"name": "get_weather", "arguments": f'{{"city":"{city}"}}'},
    }


def test_golden_conversation_with_calls_and_results(tokenizer):
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        # As the SDK echoes it: content null, extra null fields.
        {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [_call(1, "Paris"), _call(2, "Rome")],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "14C"},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "18C"}]},
    ]
    assert get_format("hermes").render(tokenizer, messages, [WEATHER]) == GOLDEN


def test_without_tools_the_model_template_is_untouched(tokenizer):
    messages = [{"role": "user", "content": "hi"}]
    expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert get_format("hermes").render(tokenizer, messages, []) == expected


def test_a_past_call_is_told_in_words_that_never_read_back_as_a_call(tokenizer):
    """bench/tool_rounds.py: told in words, the 135M model answers from the result; in markup it
    calls again or loops on markup (formats/hermes.py has the figures)."""
    fmt = get_format("hermes")
    rendered = fmt.render(
        tokenizer,
        [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": None, "tool_calls": [_call(1, "Oslo")]},
        ],
        [WEATHER],
    )
    written = rendered.split("<|im_start|>assistant\n")[1].split("<|im_end|>")[0]
    assert written == 'Let me call get_weather({"city": "Oslo"}).'
    delta = fmt.extractor([WEATHER]).parse_complete(written)
    assert not delta.calls and delta.content == written


def test_tool_choice_none_leaves_out_the_block_that_says_how_to_call(tokenizer):
    messages = [{"role": "user", "content": "hi"}]
    fmt = get_format("hermes")
    assert "<tools>" in fmt.render(tokenizer, messages, [WEATHER], "auto")
    assert fmt.render(tokenizer, messages, [WEATHER], "none") == fmt.render(tokenizer, messages, [])
