"""The grammar mask's cost a step, on the ggml step's logits: filled by xgrammar's matcher and
applied on numpy arrays (the ggml path since it keeps torch out: xgrammar's CPU kernel given
numpy's pointers, services/decode/numpy_sampling.py) against the same rows applied through torch
(the path before: the numpy logits wrapped as a tensor, xgrammar's apply_token_bitmask_inplace),
in one process, taking turns, on the embedded model's vocabulary. Rows: sequences inside a strict tool call's JSON arguments (where the mask is not
all-true and is applied).

    python -m bench.mask_apply [--rows 1 16] [--steps 400]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from toolwire.constraints import xgrammar_core as xgr
from toolwire.runtime import model_source
from toolwire.services.decode import numpy_sampling, torch_sampling

SCHEMA = {
    "type": "object",
    "properties": {"location": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["location", "days"],
    "additionalProperties": False,
}
PREFIX = '{"location": "Par'  # inside a string value: most tokens allowed, some not


@dataclass
class Row:
    matcher: xgr.GrammarMatcher
    temperature: float = 0.0
    top_p: float = 1.0
    generator: object = None


def rows(n: int, compiled, tok) -> list[Row]:
    out = []
    for _ in range(n):
        m = xgr.GrammarMatcher(compiled)
        for t in tok.encode(PREFIX, add_special_tokens=False):
            assert m.accept_token(t)
        out.append(Row(m))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--steps", type=int, default=400)
    args = ap.parse_args()
    torch.set_num_threads(1)  # beside the ggml step torch ran on one thread
    tok = model_source.load_tokenizer(model_source.resolve("embedded"))
    vocab = 49152
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=vocab, stop_token_ids=[2])
    compiled = xgr.GrammarCompiler(info, max_threads=1).compile_grammar(
        xgr.Grammar.from_json_schema(json.dumps(SCHEMA))
    )
    rng = np.random.default_rng(0)
    print("| rows | numpy µs a step (a row) | torch µs a step (a row) | numpy / torch |")
    print("|---|---|---|---|")
    for n in args.rows:
        seqs = rows(n, compiled, tok)
        bitmask = xgr.allocate_token_bitmask(n, vocab)
        base = rng.standard_normal((n, vocab), dtype=np.float32)
        took: dict[str, list[float]] = {"numpy": [], "torch": []}
        for step in range(args.steps):
            for name in ("numpy", "torch") if step % 2 else ("torch", "numpy"):
                logits = base.copy()
                t0 = time.perf_counter()
                if name == "numpy":
                    numpy_sampling.apply_masks(seqs, logits, bitmask)
                else:
                    torch_sampling.apply_masks(seqs, torch.from_numpy(logits), bitmask)
                took[name].append(time.perf_counter() - t0)
                assert np.isneginf(logits).any()  # the mask was applied
        a, b = (statistics.median(took[k]) * 1e6 for k in ("numpy", "torch"))
        print(f"| {n} | {a:.0f} ({a / n:.0f}) | {b:.0f} ({b / n:.0f}) | {a / b:.2f} |")


if __name__ == "__main__":
    main()
