"""Tokenizers of other model families, built here: real ones cannot be downloaded.

Each is the embedded tokenizer plus the family's special tokens and a chat template written
for the family's documented tool format (a reduced form of the real template: same tokens, same
layout of tools, calls and results).
"""

from __future__ import annotations

import copy

LLAMA31 = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "{% if tools %}Environment: ipython\n\n{% endif %}"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}{% endif %}<|eot_id|>"
    "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}"
    "{% if m.role == 'user' and tools and loop.index0 == (1 if messages[0].role == 'system' else 0) %}"
    "<|start_header_id|>user<|end_header_id|>\n\nGiven the following functions, please respond "
    "with a JSON for a function call with its proper arguments that best answers the given "
    'prompt.\n\nRespond in the format {"name": function name, "parameters": dictionary of '
    "argument name and its value}. Do not use variables.\n\n"
    "{% for t in tools %}{{ t | tojson }}\n\n{% endfor %}{{ m.content }}<|eot_id|>"
    "{% elif m.role == 'assistant' and m.tool_calls %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
    "{% for c in m.tool_calls %}{% if not loop.first %}; {% endif %}<|python_tag|>"
    '{"name": "{{ c.function.name }}", "parameters": {{ c.function.arguments | tojson }}}'
    "{% endfor %}<|eom_id|>"
    "{% elif m.role in ('tool', 'ipython') %}<|start_header_id|>ipython<|end_header_id|>\n\n"
    "{{ m.content }}<|eot_id|>"
    "{% else %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
LLAMA_TOKENS = [
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|python_tag|>",
]

LLAMA32_PYTHONIC = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    "{% if tools %}You are an expert in composing functions. If you decide to invoke any of "
    "the function(s), you MUST put it in the format of [func_name1(params_name1=params_value1,"
    " params_name2=params_value2...), func_name2(params)]\nHere is a list of functions in JSON "
    "format that you can invoke.\n{{ tools | tojson }}\n{% endif %}<|eot_id|>"
    "{% for m in messages %}"
    "{% if m.role == 'assistant' and m.tool_calls %}<|start_header_id|>assistant<|end_header_id|>\n\n["
    "{% for c in m.tool_calls %}{% if not loop.first %}, {% endif %}{{ c.function.name }}("
    "{% for k, v in c.function.arguments.items() %}{{ k }}={{ v | tojson }}"
    "{% if not loop.last %}, {% endif %}{% endfor %})"
    "{% endfor %}]<|eot_id|>"
    "{% elif m.role in ('tool', 'ipython') %}<|start_header_id|>ipython<|end_header_id|>\n\n"
    "{{ m.content }}<|eot_id|>"
    "{% else %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

MISTRAL = (
    "<s>{% set ns = namespace(last_user=-1) %}{% for m in messages %}{% if m.role == 'user' %}"
    "{% set ns.last_user = loop.index0 %}{% endif %}{% endfor %}{% for m in messages %}"
    "{% if m.role == 'system' %}[SYSTEM_PROMPT]{{ m.content }}[/SYSTEM_PROMPT]"
    "{% elif m.role == 'user' %}{% if tools and loop.index0 == ns.last_user %}[AVAILABLE_TOOLS]{{ tools | tojson }}"
    "[/AVAILABLE_TOOLS]{% endif %}[INST]{{ m.content }}[/INST]"
    "{% elif m.role == 'assistant' and m.tool_calls %}"
    "{% for c in m.tool_calls %}[TOOL_CALLS]{{ c.function.name }}[CALL_ID]{{ c.id }}[ARGS]"
    "{{ c.function.arguments | tojson }}{% endfor %}</s>"
    "{% elif m.role == 'tool' %}[TOOL_RESULTS]{{ m.tool_call_id }}[TOOL_CONTENT]{{ m.content }}"
    "[/TOOL_RESULTS]"
    "{% else %}{{ m.content }}</s>{% endif %}{% endfor %}"
)
MISTRAL_TOKENS = [
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "[TOOL_CALLS]",
    "[ARGS]",
    "[CALL_ID]",
    "[AVAILABLE_TOOLS]",
    "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]",
    "[TOOL_CONTENT]",
    "[/TOOL_RESULTS]",
    "[SYSTEM_PROMPT]",
    "[/SYSTEM_PROMPT]",
]

DEEPSEEK_V3 = (
    "<｜begin▁of▁sentence｜>{% if messages[0].role == 'system' %}{{ messages[0].content }}"
    "{% endif %}{% if tools %}{{ '\\n' }}{{ '\\n' }}## Tools\n\n### Function\n\nYou have the following "
    "functions available:\n{% for t in tools %}{{ '\\n' }}- `{{ t.function.name }}`:\n```json\n"
    "{{ t.function | tojson }}\n```{% endfor %}{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'user' %}<｜User｜>{{ m.content }}"
    "{% elif m.role == 'assistant' and m.tool_calls %}<｜Assistant｜><｜tool▁calls▁begin｜>"
    "{% for c in m.tool_calls %}{% if not loop.first %}{{ '\\n' }}{% endif %}<｜tool▁call▁begin｜>"
    "function<｜tool▁sep｜>{{ c.function.name }}\n```json\n{{ c.function.arguments | tojson }}"
    "\n```<｜tool▁call▁end｜>{% endfor %}<｜tool▁calls▁end｜><｜end▁of▁sentence｜>"
    "{% elif m.role == 'tool' %}<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>{{ m.content }}"
    "<｜tool▁output▁end｜><｜tool▁outputs▁end｜>"
    "{% elif m.role == 'assistant' %}<｜Assistant｜>{{ m.content }}<｜end▁of▁sentence｜>"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<｜Assistant｜>{% endif %}"
)
DEEPSEEK_TOKENS = [
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
    "<｜User｜>",
    "<｜Assistant｜>",
    "<｜tool▁calls▁begin｜>",
    "<｜tool▁calls▁end｜>",
    "<｜tool▁call▁begin｜>",
    "<｜tool▁call▁end｜>",
    "<｜tool▁sep｜>",
    "<｜tool▁outputs▁begin｜>",
    "<｜tool▁outputs▁end｜>",
    "<｜tool▁output▁begin｜>",
    "<｜tool▁output▁end｜>",
]

QWEN25 = (
    "{% if tools %}<|im_start|>system\n{% if messages[0].role == 'system' %}"
    "{{ messages[0].content }}\n\n{% endif %}# Tools\n\nYou may call one or more functions to "
    "assist with the user query.\n\nYou are provided with function signatures within "
    "<tools></tools> XML tags:\n<tools>{% for t in tools %}{{ '\\n' }}{{ t | tojson }}{% endfor %}{{ '\\n' }}"
    "</tools>\n\nFor each function call, return a json object with function name and arguments "
    'within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, '
    '"arguments": <args-json-object>}\n</tool_call><|im_end|>\n{% endif %}'
    "{% for m in messages %}{% if m.role == 'system' %}{% if not tools %}<|im_start|>system\n"
    "{{ m.content }}<|im_end|>\n{% endif %}"
    "{% elif m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant\n"
    "{% if m.content %}{{ m.content }}{{ '\\n' }}{% endif %}"
    "{% for c in m.tool_calls %}{% if not loop.first %}{{ '\\n' }}{% endif %}<tool_call>\n"
    '{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments | tojson }}}\n'
    "</tool_call>{% endfor %}<|im_end|>\n"
    "{% elif m.role == 'tool' %}{% if loop.first or messages[loop.index0 - 1].role != 'tool' %}"
    "<|im_start|>user{% endif %}{{ '\\n' }}<tool_response>\n{{ m.content }}\n</tool_response>"
    "{% if loop.last or messages[loop.index0 + 1].role != 'tool' %}<|im_end|>\n{% endif %}"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN_TOKENS = ["<tool_call>", "</tool_call>"]

# gpt-oss (Harmony): its special tokens, and a template that frames turns but declares no tools,
# so toolwire writes the Harmony prompt itself (the real template's TypeScript tool
# declarations are toolwire's own renderer's, formats/harmony.py).
HARMONY = (
    "{% for m in messages %}<|start|>{{ m.role }}<|message|>{{ m.content }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|start|>assistant{% endif %}"
)
HARMONY_TOKENS = [
    "<|start|>",
    "<|end|>",
    "<|message|>",
    "<|channel|>",
    "<|constrain|>",
    "<|return|>",
    "<|call|>",
]

FAMILIES = {
    "hermes": (QWEN_TOKENS, QWEN25),
    "llama3_json": (LLAMA_TOKENS, LLAMA31),
    "pythonic": (LLAMA_TOKENS, LLAMA32_PYTHONIC),
    "mistral": (MISTRAL_TOKENS, MISTRAL),
    "deepseek_v3": (DEEPSEEK_TOKENS, DEEPSEEK_V3),
    "harmony": (HARMONY_TOKENS, HARMONY),
}


def family_tokenizer(base, family: str):
    tokens, template = FAMILIES[family]
    tok = copy.deepcopy(base)
    tok.add_special_tokens({"additional_special_tokens": tokens})
    tok.chat_template = template
    return tok


# Qwen3: the Qwen2.5 layout, and a model that thinks first (<think>...</think>).
QWEN3 = QWEN25.replace(
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}",
)
FAMILIES_THINKING = {"hermes": (QWEN_TOKENS + ["<think>", "</think>"], QWEN3)}


def thinking_tokenizer(base, family: str = "hermes"):
    tokens, template = FAMILIES_THINKING[family]
    tok = copy.deepcopy(base)
    tok.add_special_tokens({"additional_special_tokens": tokens})
    tok.chat_template = template
    return tok


def _kept_newlines(template: str) -> str:
    """Hugging Face renders with trim_blocks (a newline right after a block tag is dropped); the
    real templates write such newlines as expressions, so these do too."""
    return template.replace("%}\n", "%}{{ '\\n' }}")


# Qwen3-Coder (and Qwen3.5/3.6, which add <think>): the real template's layout of tools
# (<tools><function><name>..), calls (<function=NAME><parameter=K>) and results.
QWEN3_CODER = _kept_newlines(
    "{% if messages[0].role == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0].content %}{% else %}{% set loop_messages = messages %}"
    "{% endif %}"
    "{% if system_message is defined %}<|im_start|>system\n{{ system_message }}"
    "{% elif tools %}<|im_start|>system\nYou are Qwen, a helpful AI assistant that can interact "
    "with a computer to solve tasks.{% endif %}"
    "{% if tools %}\n\n# Tools\n\nYou have access to the following functions:\n\n<tools>"
    "{% for tool in tools %}{% set tool = tool.function if tool.function is defined else tool %}"
    "\n<function>\n<name>{{ tool.name }}</name>"
    "{% if tool.description is defined %}\n<description>{{ tool.description | trim }}"
    "</description>{% endif %}\n<parameters>"
    "{% if tool.parameters is defined and tool.parameters.properties is defined %}"
    "{% for pname, pfields in tool.parameters.properties | items %}\n<parameter>\n<name>"
    "{{ pname }}</name>{% if pfields.type is defined %}\n<type>{{ pfields.type | string }}"
    "</type>{% endif %}\n</parameter>{% endfor %}{% endif %}\n</parameters>\n</function>"
    "{% endfor %}\n</tools>\n\nIf you choose to call a function ONLY reply in the following "
    "format with NO suffix:\n\n<tool_call>\n<function=example_function_name>\n"
    "<parameter=example_parameter_1>\nvalue_1\n</parameter>\n</function>\n</tool_call>"
    "{% endif %}{% if system_message is defined or tools %}<|im_end|>\n{% endif %}"
    "{% for m in loop_messages %}"
    "{% if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant"
    "{% if m.content %}\n{{ m.content | trim }}\n{% endif %}"
    "{% for tc in m.tool_calls %}{% set tc = tc.function if tc.function is defined else tc %}"
    "\n<tool_call>\n<function={{ tc.name }}>\n"
    "{% if tc.arguments is mapping %}{% for k, v in tc.arguments | items %}<parameter={{ k }}>\n"
    "{% if v is mapping or (v is sequence and v is not string) %}{{ v | tojson }}"
    "{% else %}{{ v | string }}{% endif %}\n</parameter>\n{% endfor %}{% endif %}"
    "</function>\n</tool_call>{% endfor %}<|im_end|>\n"
    "{% elif m.role == 'tool' %}{% if loop.first or loop.previtem.role != 'tool' %}"
    "<|im_start|>user\n{% endif %}<tool_response>\n{{ m.content }}\n</tool_response>\n"
    "{% if loop.last or loop.nextitem.role != 'tool' %}<|im_end|>\n{% endif %}"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
QWEN3_CODER_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
# Qwen3.5/3.6: the same layout, thinking first.
QWEN35 = QWEN3_CODER.replace(
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}",
)

# GLM-4.5/4.6 (glm45) and GLM-4.7/5 (glm47): tools as JSON lines, calls as
# <tool_call>NAME<arg_key>K</arg_key><arg_value>V</arg_value></tool_call>, newlines in 4.5.
_GLM = (
    "[gMASK]<sop>{% if tools %}<|system|>\n# Tools\n\nYou may call one or more functions to "
    "assist with the user query.\n\nYou are provided with function signatures within "
    "<tools></tools> XML tags:\n<tools>\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}"
    "</tools>\n\nFor each function call, output the function name and arguments within the "
    "following XML format:\n<tool_call>{function-name}NL<arg_key>{arg-key-1}</arg_key>NL"
    "<arg_value>{arg-value-1}</arg_value>NL<arg_key>{arg-key-2}</arg_key>NL"
    "<arg_value>{arg-value-2}</arg_value>NL...NL</tool_call>{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'system' %}<|system|>\n{{ m.content }}"
    "{% elif m.role == 'user' %}<|user|>\n{{ m.content }}"
    "{% elif m.role == 'assistant' %}<|assistant|>\n<think></think>"
    "{% if m.content %}{{ m.content }}{% endif %}"
    "{% for tc in m.tool_calls or [] %}{% set tc = tc.function if tc.function is defined else tc %}"
    "NL<tool_call>{{ tc.name }}NL{% if tc.arguments is mapping %}{% for k, v in tc.arguments | items %}"
    "<arg_key>{{ k }}</arg_key>NL<arg_value>{{ v if v is string else v | tojson }}</arg_value>NL"
    "{% endfor %}{% endif %}</tool_call>{% endfor %}"
    "{% elif m.role == 'tool' %}{% if loop.first or loop.previtem.role != 'tool' %}"
    "<|observation|>{% endif %}\n<tool_response>\n{{ m.content }}\n</tool_response>"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>GEN{% endif %}"
)
GLM45 = _kept_newlines(_GLM.replace("NL", "\n").replace("GEN", ""))
GLM47 = _kept_newlines(_GLM.replace("NL", "").replace("GEN", "<think>"))
GLM_TOKENS = [
    "[gMASK]",
    "<sop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<arg_key>",
    "</arg_key>",
    "<arg_value>",
    "</arg_value>",
]
FAMILIES.update(
    {
        "qwen3_coder": (QWEN3_CODER_TOKENS, QWEN3_CODER),
        "glm45": (GLM_TOKENS, GLM45),
        "glm47": (GLM_TOKENS, GLM47),
    }
)
FAMILIES_THINKING["qwen3_coder"] = (QWEN3_CODER_TOKENS + ["<think>", "</think>"], QWEN35)

# DeepSeek V3.1: tools in the system turn (`### NAME` entries), calls as
# <｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{JSON}<｜tool▁call▁end｜> chained with no separator, results
# as <｜tool▁output▁begin｜>, the generation prompt ending </think> (not thinking) or <think>.
DEEPSEEK_V31 = (
    "<｜begin▁of▁sentence｜>{% if messages[0].role == 'system' %}{{ messages[0].content }}"
    "{% endif %}{% if tools %}{{ '\\n\\n' }}## Tools\nYou have access to the following tools:\n"
    "{% for t in tools %}{{ '\\n' }}### {{ t.function.name }}\nDescription: "
    "{{ t.function.description }}\n\nParameters: {{ t.function.parameters | tojson }}\n"
    "{% endfor %}\nIMPORTANT: ALWAYS adhere to this exact format for tool use:\n"
    "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>tool_call_name<｜tool▁sep｜>tool_call_arguments"
    "<｜tool▁call▁end｜>{{ '{{additional_tool_calls}}' }}<｜tool▁calls▁end｜>\n{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'user' %}<｜User｜>{{ m.content }}"
    "{% elif m.role == 'assistant' and m.tool_calls %}<｜Assistant｜></think>"
    "{% if m.content %}{{ m.content }}{% endif %}<｜tool▁calls▁begin｜>"
    "{% for c in m.tool_calls %}<｜tool▁call▁begin｜>{{ c.function.name }}<｜tool▁sep｜>"
    "{% if c.function.arguments is string %}{{ c.function.arguments }}{% else %}"
    "{{ c.function.arguments | tojson }}{% endif %}<｜tool▁call▁end｜>{% endfor %}"
    "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>"
    "{% elif m.role == 'tool' %}<｜tool▁output▁begin｜>{{ m.content }}<｜tool▁output▁end｜>"
    "{% elif m.role == 'assistant' %}<｜Assistant｜></think>{{ m.content }}<｜end▁of▁sentence｜>"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<｜Assistant｜>THINK{% endif %}"
)
DEEPSEEK_V31_TOKENS = DEEPSEEK_TOKENS + ["<think>", "</think>"]

# DeepSeek V3.2 and V4: no chat template (their encodings are Python, which formats/dsml.py
# writes); the vocabulary's DSML token, and V4's quick-instruction tokens.
DSML_TOKENS = DEEPSEEK_V31_TOKENS + ["｜DSML｜"]
V4_TOKENS = DSML_TOKENS + ["<｜latest_reminder｜>", "<｜action｜>", "<｜query｜>"]

# Kimi K2 / K2.5: tools declared as JSON in a tool_declare turn, calls with ids
# functions.NAME:IDX, results as `## Return of ID` in a tool turn.
KIMI = (
    "{% if tools %}<|im_system|>tool_declare<|im_middle|>{{ tools | tojson }}<|im_end|>{% endif %}"
    "{% for m in messages %}"
    "{% if loop.first and m.role != 'system' %}<|im_system|>system<|im_middle|>You are Kimi, an "
    "AI assistant created by Moonshot AI.<|im_end|>{% endif %}"
    "{% if m.role == 'system' %}<|im_system|>system<|im_middle|>"
    "{% elif m.role == 'user' %}<|im_user|>user<|im_middle|>"
    "{% elif m.role == 'assistant' %}<|im_assistant|>assistant<|im_middle|>"
    "{% else %}<|im_system|>{{ m.role }}<|im_middle|>{% endif %}"
    "{% if m.role == 'assistant' and m.tool_calls %}{% if m.content %}{{ m.content }}{% endif %}"
    "<|tool_calls_section_begin|>{% for c in m.tool_calls %}<|tool_call_begin|>{{ c.id }}"
    "<|tool_call_argument_begin|>{% if c.function.arguments is string %}"
    "{{ c.function.arguments }}{% else %}{{ c.function.arguments | tojson }}{% endif %}"
    "<|tool_call_end|>{% endfor %}<|tool_calls_section_end|>"
    "{% elif m.role == 'tool' %}## Return of {{ m.tool_call_id }}\n{{ m.content }}"
    "{% else %}{{ m.content }}{% endif %}<|im_end|>{% endfor %}"
    "{% if add_generation_prompt %}<|im_assistant|>assistant<|im_middle|>THINK{% endif %}"
)
KIMI_TOKENS = [
    "<|im_user|>",
    "<|im_assistant|>",
    "<|im_system|>",
    "<|im_middle|>",
    "<|tool_calls_section_begin|>",
    "<|tool_calls_section_end|>",
    "<|tool_call_begin|>",
    "<|tool_call_argument_begin|>",
    "<|tool_call_end|>",
    "<think>",
    "</think>",
]
FAMILIES.update(
    {
        # V3.1's switch, as its template reads it: `thinking` opens <think>, else </think>.
        "deepseek_v31": (
            DEEPSEEK_V31_TOKENS,
            DEEPSEEK_V31.replace(
                "THINK",
                "{% if thinking is defined and thinking %}<think>{% else %}</think>{% endif %}",
            ),
        ),
        "deepseek_v32": (DSML_TOKENS, None),
        "deepseek_v4": (V4_TOKENS, None),
        "kimi_k2": (KIMI_TOKENS, KIMI.replace("THINK", "")),
    }
)
# V3.1 asked to think, and Kimi K2.5 (its generation prompt opens <think>).
FAMILIES_THINKING["deepseek_v31"] = (DEEPSEEK_V31_TOKENS, DEEPSEEK_V31.replace("THINK", "<think>"))
# K2.5 thinks unless `thinking` is false (then an empty think block closes the prompt).
FAMILIES_THINKING["kimi_k2"] = (
    KIMI_TOKENS,
    KIMI.replace(
        "THINK",
        "{% if thinking is defined and thinking is false %}<think></think>{% else %}<think>"
        "{% endif %}",
    ),
)
