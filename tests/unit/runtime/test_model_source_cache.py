"""What the services keep of a GGUF between starts: the converted tokenizer, loaded by its class
(not through AutoTokenizer's index of every model family), and the config's two numbers (not
transformers' parse of the whole file). Both must give what transformers gives."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from toolwire.runtime import model_source

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Paris?  \n\ttabs, é and 🚀"},
]


@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(model_source, "CACHE_DIR", tmp_path)
    return tmp_path


def test_converted_tokenizer_loads_by_class_and_matches_transformers(fresh_cache):
    from transformers import AutoTokenizer

    src = model_source.resolve("embedded")
    folder = model_source._gguf_cache(src)
    folder.mkdir(parents=True)  # a cache this transformers cannot read: replaced, not kept
    (folder / "tokenizer_config.json").write_text("{")
    first = model_source.load_tokenizer(src)  # converts the GGUF's tokenizer and caches it
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no .tmp, .old
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] in ("TokenizersBackend", "PreTrainedTokenizerFast")
    again = model_source.load_tokenizer(src)  # from the cache, by its class
    reference = AutoTokenizer.from_pretrained(str(folder))
    for tok in (first, again):
        assert tok.apply_chat_template(
            MESSAGES, tokenize=False, add_generation_prompt=True
        ) == reference.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
        text = 'get_weather({"location": "Paris"}) <|im_end|> 🚀'
        assert tok.encode(text) == reference.encode(text)
        assert tok.eos_token_id == reference.eos_token_id
        assert len(tok) == len(reference)


def test_config_sizes_are_read_once_and_kept(fresh_cache):
    src = model_source.resolve("embedded")
    assert model_source.config_sizes(src) == (8192, 49152)  # SmolLM2-135M's config
    kept = model_source._gguf_cache(src).with_suffix(".sizes.json")
    assert json.loads(kept.read_text()) == {"max_position_embeddings": 8192, "vocab_size": 49152}
    kept.write_text('{"max_position_embeddings": 1024, "vocab_size": 7}')
    assert model_source.config_sizes(src) == (1024, 7)  # the kept numbers, not a re-read
    kept.write_text("not json")
    assert model_source.config_sizes(src) == (8192, 49152)  # unreadable: read again


CONVERT_WITHOUT_TORCH = """
import json, sys
from toolwire.runtime.without_torch import keep_torch_out
keep_torch_out()
import pathlib
from toolwire.runtime import model_source
model_source.CACHE_DIR = pathlib.Path(sys.argv[1])
src = model_source.resolve("embedded")
tok = model_source.load_tokenizer(src)
sizes = model_source.config_sizes(src)
print(json.dumps({"torch": sys.modules["torch"] is not None, "sizes": sizes,
                  "ids": tok.encode(sys.argv[2]), "eos": tok.eos_token_id}))
"""


def test_a_process_without_torch_converts_the_gguf_in_a_child(fresh_cache):
    """transformers' GGUF reader imports torch: a service that keeps torch out has it run in a
    child process, and gets the same tokenizer and sizes as one that converts in-process."""
    text = 'get_weather({"location": "Paris"}) <|im_end|> 🚀'
    out = subprocess.run(
        [sys.executable, "-c", CONVERT_WITHOUT_TORCH, str(fresh_cache), text],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    src = model_source.resolve("embedded")
    reference = model_source.load_tokenizer(src)  # from the cache the child wrote
    assert got == {
        "torch": False,
        "sizes": [8192, 49152],
        "ids": reference.encode(text),
        "eos": reference.eos_token_id,
    }
    assert out.stderr == ""  # nothing on the service's console but its own lines
