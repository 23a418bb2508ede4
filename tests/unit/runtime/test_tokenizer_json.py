"""The decode service and the extractor read the model's tokenizer.json through the tokenizers
library alone (toolwire/runtime/tokenizer_json.py): every answer they take from it must be
transformers' answer for the same tokenizer, and a tokenizer it cannot read as transformers
does goes to transformers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from toolwire.formats import detect_format
from toolwire.runtime import model_source
from toolwire.runtime.tokenizer_json import TokenizerJson

TEXTS = [
    "What is the weather like in Paris today?",
    '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris"}}\n</tool_call>',
    "<|im_start|>assistant\n  two  spaces,\ttabs, é, 日本語 and 🚀<|im_end|>",
    "",
]


@pytest.fixture(scope="module")
def pair():
    src = model_source.resolve("embedded")
    ours = model_source.load_tokenizer_json(src, chat_template=True)
    assert isinstance(ours, TokenizerJson)
    return ours, model_source.load_tokenizer(src)


def test_it_answers_as_transformers_does(pair):
    ours, theirs = pair
    assert len(ours) == len(theirs)
    assert ours.eos_token_id == theirs.eos_token_id
    assert ours.get_vocab() == theirs.get_vocab()
    assert ours.chat_template == theirs.chat_template
    assert detect_format(ours) == detect_format(theirs)
    for text in TEXTS:
        ids = ours.encode(text, add_special_tokens=False)
        assert ids == theirs.encode(text, add_special_tokens=False), text
        assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
    ids = [0, 1, 2, len(ours) // 2, len(ours) - 1]
    assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)


def _folder(tmp_path, pair, config: dict):
    ours, _ = pair
    ours.backend.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    return tmp_path


def test_what_it_cannot_read_as_transformers_does_goes_to_transformers(tmp_path, pair):
    assert TokenizerJson.load(tmp_path) is None  # no tokenizer.json: a slow tokenizer
    generic = {"tokenizer_class": "TokenizersBackend"}
    folder = _folder(tmp_path, pair, {**generic, "eos_token": "<no such token>"})
    assert TokenizerJson.load(folder) is None
    # A model's own class may rebuild the file's pre-tokenizer (add_prefix_space, legacy).
    _folder(tmp_path, pair, {"tokenizer_class": "LlamaTokenizerFast", "eos_token": "<|im_end|>"})
    assert TokenizerJson.load(folder) is None
    named = [{"name": "default", "template": "a"}, {"name": "tool_use", "template": "b"}]
    eos = {"content": "<|im_end|>"}
    _folder(tmp_path, pair, {**generic, "eos_token": eos, "chat_template": named})
    assert TokenizerJson.load(folder) is not None  # without its template: the decode's read
    assert TokenizerJson.load(folder, chat_template=True) is None  # transformers chooses one
    plain = {"eos_token": "<|im_end|>", "chat_template": "{{ messages }}"}
    _folder(tmp_path, pair, {"tokenizer_class": "PreTrainedTokenizerFast", **plain})
    (folder / "chat_template.jinja").write_text("{{ jinja }}")  # the file wins, as in v5
    found = TokenizerJson.load(folder, chat_template=True)
    assert found is not None and found.chat_template == "{{ jinja }}"
    shutil.rmtree(folder)


def test_the_services_that_render_no_template_never_import_transformers():
    """The extractor's load and the decode service's, the gateway's and a grammar worker's
    imports, in one process that keeps torch out as they do (the ggml decode's load:
    tests/engine_contract/test_gguf_tokenizer.py)."""
    script = """
import sys
from toolwire.runtime.without_torch import keep_torch_out
keep_torch_out()
import gateway.server, services.decode.server, services.extractor.server
import toolwire.constraints.compile_worker
from toolwire.constraints.compiler import ConstraintCompiler
from toolwire.formats import detect_format, get_format
from toolwire.runtime import model_source
tok = model_source.load_tokenizer_json(model_source.resolve("embedded"), chat_template=True)
get_format(detect_format(tok), tok)
print(type(tok).__name__, sorted(m for m in sys.modules if m.split(".")[0] == "transformers"))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["TokenizerJson", "[]"], out.stdout + out.stderr
