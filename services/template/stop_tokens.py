"""The token ids that end a generated turn: the tokenizer's eos, the model's
generation_config.json `eos_token_id` (Llama 3.1 lists <|eom_id|> and <|eot_id|> there, GLM
<|user|> and <|observation|>), and the format's own turn-end tokens where the vocabulary has
them as single tokens. Without them a model whose tokenizer eos is not its turn end (GLM's is
<|endoftext|>) writes past its turn: the next user message, as content.

One set serves the constraint compiler (xgrammar lets a stop token through only where the
grammar may end) and the decode engines (they stop on any of them)."""

from __future__ import annotations

import json
import pathlib

from toolwire.formats.base import ToolFormat


def generation_config_eos(folder: str | None) -> list[int]:
    """generation_config.json's eos_token_id (an int or a list); [] where there is none."""
    if not folder:
        return []
    try:
        data = json.loads(pathlib.Path(folder, "generation_config.json").read_text())
    except (OSError, ValueError):
        return []
    eos = data.get("eos_token_id")
    ids = eos if isinstance(eos, list) else [eos]
    return [i for i in ids if isinstance(i, int) and i >= 0]


def stop_token_ids(tokenizer, fmt: ToolFormat, folder: str | None = None) -> list[int]:
    ids = {tokenizer.eos_token_id, *generation_config_eos(folder)}
    for token in fmt.turn_end_tokens:
        i = tokenizer.convert_tokens_to_ids(token)
        if (
            isinstance(i, int) and i != tokenizer.unk_token_id
        ):  # absent from this vocabulary: not a turn end here
            ids.add(i)
    return sorted(ids - {None})
