"""A model's tokenizer.json through the tokenizers library alone, for the extractor, which
renders no chat template.

The extractor decodes ids with the Rust tokenizer itself, and its tool formats read the
vocabulary and the chat template's text. transformers' tokenizer answers all of it from the
same Rust tokenizer, and costs 25 MB of imports and 18 MB of its own tables in each such
process (docs/operations.md, "Memory"). The answers agree
(tests/unit/runtime/test_tokenizer_json.py). The decode service on the ggml step loads no
tokenizer at all: its tokenizer is the GGUF's (services/decode/gguf_tokenizer.py).
"""

from __future__ import annotations

import json
import pathlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tokenizers

# The classes that load tokenizer.json as it is (transformers 5's name and 4's); a GGUF's
# converted tokenizer is one (model_source.load_tokenizer).
AS_IS = ("TokenizersBackend", "PreTrainedTokenizerFast")


class TokenizerJson:
    """A tokenizer.json, its eos token and chat template, read as transformers reads them."""

    def __init__(
        self, backend: tokenizers.Tokenizer, eos_token_id: int, chat_template: str | None = None
    ):
        self.backend = backend
        self.eos_token_id = eos_token_id
        self.chat_template = chat_template

    @classmethod
    def load(cls, folder: str | pathlib.Path, chat_template: bool = False) -> TokenizerJson | None:
        """The folder's tokenizer (with its chat template's text), or None where transformers
        must read it: a model's own tokenizer class (which may rebuild parts of the file: a
        prefix space, a legacy SentencePiece mode), no tokenizer.json, an eos token its config
        does not name in the vocabulary, or named chat templates (transformers chooses)."""
        import tokenizers  # here: the ggml decode process loads none (gguf_tokenizer.py)

        folder = pathlib.Path(folder)
        if _config(folder).get("tokenizer_class") not in AS_IS:
            return None
        try:
            backend = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
        except Exception:  # absent, or a format this tokenizers cannot read
            return None
        eos = eos_token(folder)
        eos_id = backend.token_to_id(eos) if eos else None
        if eos_id is None:
            return None
        if not chat_template:
            return cls(backend, eos_id)
        readable, template = _chat_template(folder)
        return cls(backend, eos_id, template) if readable else None

    @property
    def backend_tokenizer(self) -> tokenizers.Tokenizer:
        return self.backend

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str | None]:
        return [self.backend.id_to_token(i) for i in ids]


def _config(folder: pathlib.Path, name: str = "tokenizer_config.json") -> dict:
    try:
        found = json.loads((folder / name).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def eos_token(folder: pathlib.Path) -> str | None:
    """The eos token's text: tokenizer_config.json's, else special_tokens_map.json's (a string
    or an AddedToken's dict)."""
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        eos = _config(folder, name).get("eos_token")
        if isinstance(eos, dict):
            eos = eos.get("content")
        if isinstance(eos, str) and eos:
            return eos
    return None


def _chat_template(folder: pathlib.Path) -> tuple[bool, str | None]:
    """(readable here, the chat template's text) where transformers 5 finds it:
    chat_template.jinja, else tokenizer_config.json's `chat_template`; not readable where
    there are named templates (a list, or a folder of them: transformers chooses one)."""
    if (folder / "additional_chat_templates").is_dir():
        return False, None
    try:
        return True, (folder / "chat_template.jinja").read_text()
    except OSError:
        pass
    template = _config(folder).get("chat_template")
    return template is None or isinstance(template, str), template
