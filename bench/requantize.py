"""The embedded model in other quantizations: what a GGUF's weight type does to the ggml step's
batching and draft verification, and what requantizing the shipped Q4_1 file costs in quality.

    python -m bench.requantize                           # q8_0 q4_0 q4_k iq4_nl
    python -m bench.requantize --types q4_0              # then: bench.peer --model <its path>

llama.cpp's CPU backend has repacked kernels (weights interleaved for several rows at once) for
some types and not others, and Q4_1, the embedded file's type, is not one of them on x86: a
step of 4 sequences costs about 3 single steps there. Each type is written once by llama.cpp's
own quantizer (`llama_model_quantize`, requantizing allowed, every tensor in that type where
its rows allow) into the cache. Per type: the file's size; the step's median time at 1, 4 and
16 sequences and for one sequence verifying 2, 4 and 8 positions (a draft); and against the
shipped file, over the same texts (a docs page, a tool conversation, a story), the next-token
distributions' mean KL divergence, top-1 agreement and perplexity.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random

import numpy as np

from toolwire.runtime import model_source

from .run import OUT
from .step import median_step_ms

TYPES = {"q8_0": 7, "q4_0": 2, "q4_k": 14, "iq4_nl": 25, "q5_1": 9, "q6_k": 18}
FOLDER = model_source.CACHE_DIR / "requantized"


def requantized(kind: str) -> pathlib.Path:
    """The embedded GGUF in `kind`, written once into the cache."""
    from toolwire.services.decode.steps import ggml

    out = FOLDER / f"embedded-{kind}.gguf"
    if out.exists():
        return out
    ffi, lib = ggml._load()
    src = model_source.resolve(model_source.EMBEDDED)
    params = lib.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.pure = TYPES[kind], True, True
    params.nthread = os.cpu_count() or 2
    FOLDER.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    source = str(pathlib.Path(src.folder, src.gguf_file)).encode()
    box = ffi.new("llama_model_quantize_params *", params)
    if lib.llama_model_quantize(source, str(tmp).encode(), box) != 0:
        raise SystemExit(f"llama.cpp could not write {kind}")
    os.replace(tmp, out)
    return out


def step_times(path: pathlib.Path, steps: int) -> dict[str, float]:
    """Median ms of one forward: n sequences a token each, and one sequence a draft's span
    (bench.step's loop)."""
    from toolwire.services.decode.steps.ggml import GgmlStep

    step = GgmlStep(path, 18, kv_tokens=8192, threads=2)
    rng = random.Random(0)
    try:
        out = {f"{n} seqs": median_step_ms(step, n, 100, steps, rng) for n in (1, 4, 16)}
        return out | {
            f"1 seq, {w} positions": median_step_ms(step, 1, 100, steps, rng, w) for w in (2, 4, 8)
        }
    finally:
        step.close()


def texts(tokenizer) -> list[list[int]]:
    docs = (pathlib.Path(__file__).parents[1] / "docs" / "architecture.md").read_text()[:3000]
    chat = tokenizer.apply_chat_template(
        [
            {"role": "system", "content": "You are a helpful assistant with tools."},
            {"role": "user", "content": "What is the weather like in Paris today?"},
            {"role": "assistant", "content": "It is 14 degrees Celsius with light rain."},
            {"role": "user", "content": "Write a short poem about rain on the Seine."},
            {"role": "assistant", "content": "Soft rain falls on the Seine,\nsilver threads."},
        ],
        tokenize=False,
    )
    story = "Once upon a time, in a small village by the sea, there lived an old fisherman. " * 4
    return [tokenizer.encode(t, add_special_tokens=False)[:480] for t in (docs, chat, story)]


def all_logits(path: pathlib.Path, seqs: list[list[int]]) -> list[np.ndarray]:
    from toolwire.services.decode.steps import Span
    from toolwire.services.decode.steps.ggml import GgmlStep

    step = GgmlStep(path, 2, kv_tokens=2048, threads=2)
    try:
        out = []
        for ids in seqs:
            rows = step.forward([Span(0, ids, 0, every_row=True)], [])
            out.append(np.asarray(rows[: len(ids)], dtype=np.float64))
            step.release(0)
        return out
    finally:
        step.close()


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def quality(seqs, reference, got) -> dict[str, float]:
    """Against the shipped file: mean KL(reference || this), top-1 agreement, perplexities."""
    kl = agree = nll_ref = nll = 0.0
    n = 0
    for ids, r, g in zip(seqs, reference, got):
        lr, lg = log_softmax(r)[:-1], log_softmax(g)[:-1]
        kl += float((np.exp(lr) * (lr - lg)).sum())
        agree += float((lr.argmax(-1) == lg.argmax(-1)).sum())
        at = (np.arange(len(ids) - 1), np.asarray(ids[1:]))
        nll_ref -= float(lr[at].sum())
        nll -= float(lg[at].sum())
        n += len(ids) - 1
    return {
        "kl": kl / n,
        "top1": agree / n,
        "ppl shipped": float(np.exp(nll_ref / n)),
        "ppl": float(np.exp(nll / n)),
        "tokens": n,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--types", nargs="+", default=["q8_0", "q4_0", "q4_k", "iq4_nl"], choices=TYPES)
    p.add_argument("--steps", type=int, default=40, help="forwards timed per row")
    p.add_argument("--out", default=str(OUT / "requantize.json"))
    args = p.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # as the decode service runs
    src = model_source.resolve(model_source.EMBEDDED)
    shipped = pathlib.Path(src.folder, src.gguf_file)
    seqs = texts(model_source.load_tokenizer(src))
    reference = all_logits(shipped, seqs)
    files = {"q4_1 (shipped)": shipped} | {k: requantized(k) for k in args.types}
    results = {}
    for kind, path in files.items():
        results[kind] = {
            "path": str(path),
            "MB": path.stat().st_size / 2**20,
            "ms": step_times(path, args.steps),
            "quality": quality(seqs, reference, all_logits(path, seqs)),
        }
    cols = list(results["q4_1 (shipped)"]["ms"])
    print("| type | MB | " + " | ".join(f"{c}, ms" for c in cols) + " | KL | top-1 | ppl |")
    print("|---|---|" + "---|" * len(cols) + "---|---|---|")
    for kind, r in results.items():
        q = r["quality"]
        ms = " | ".join(f"{r['ms'][c]:.1f}" for c in cols)
        print(
            f"| {kind} | {r['MB']:.0f} | {ms} | {q['kl']:.4f} | {q['top1']:.3f} | {q['ppl']:.2f} |"
        )
    print(f"\nperplexity over {q['tokens']} tokens; the files: {FOLDER}")
    pathlib.Path(args.out).write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
