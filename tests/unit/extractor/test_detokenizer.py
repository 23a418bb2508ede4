"""The extractor's detokenizer: DecodeStream gives the same text, chunk for chunk, as the
window decodes it replaced, on real text (multi-byte characters included) and on random ids,
however the ids are chunked, and the same flush at the end."""

from __future__ import annotations

import random

from toolwire.services.extractor.detokenizer import IncrementalDetokenizer

TEXT = (
    'Thé café ☕ costs 3€; 你好, 🙂🙂 fine.\n<tool_call>\n{"name": "f", "arguments": '
    '{"city": "Zürich", "n": [1, 2]}}\n</tool_call>'
)


def _chunks(ids: list[int], rng: random.Random) -> list[list[int]]:
    out, i = [], 0
    while i < len(ids):
        n = rng.choice([1, 1, 2, 3, 5])
        out.append(ids[i : i + n])
        i += n
    return out


def test_decode_stream_matches_the_window_decodes(tokenizer):
    rng = random.Random(17)
    sequences = [tokenizer.encode(TEXT)] + [
        [rng.randrange(len(tokenizer)) for _ in range(120)] for _ in range(8)
    ]
    for ids in sequences:
        chunks = _chunks(ids, rng)
        fast = IncrementalDetokenizer(tokenizer)
        window = IncrementalDetokenizer(tokenizer, stream=False)
        assert fast._stream is not None
        assert [fast.add(c) for c in chunks] == [window.add(c) for c in chunks]
        assert fast.flush() == window.flush()


def test_a_character_cut_at_the_end_flushes_as_before(tokenizer):
    ids = tokenizer.encode("ok 🙂")
    for cut in range(1, len(ids)):
        fast, window = IncrementalDetokenizer(tokenizer), IncrementalDetokenizer(tokenizer, False)
        assert fast.add(ids[:cut]) == window.add(ids[:cut])
        assert fast.flush() == window.flush()
