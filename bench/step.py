"""One decode step of the ggml step alone: n sequences, each with a prompt of P random tokens,
then S steps of one token each; the median step time per n. No scheduler, no services: the
library's own cost, to compare builds, KV types and KV layouts.

    python -m bench.step                                  # 1, 4, 16 sequences; P=100; S=128
    python -m bench.step --seqs 16 --prompt 212 --kv-type f16
    python -m bench.step --seqs 16 --per-sequence-streams  # the pool split per sequence

The step runs as the decode service runs it (`OMP_WAIT_POLICY=passive`, set before the library
loads). `--per-sequence-streams` gives each of the step's max(--seqs) + 2 sequences its own
share of `--kv-tokens` (llama.cpp's `kv_unified` off, as llama-server runs with `-np`; llama.cpp
pads each share to 256 cells): attention then loops over a sequence's own cells only.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import random
import statistics
import time


def median_step_ms(step, n: int, prompt: int, steps: int, rng: random.Random, width: int = 1):
    """n sequences, each prefilled with `prompt` random tokens, then `steps` forwards of
    `width` tokens a sequence (more than one: a draft's span, a row of logits a position);
    the median forward in ms. The sequences' slots are released after."""
    from toolwire.services.decode.steps import Span

    for s in range(n):
        step.forward([], [Span(s, [rng.randrange(1000, 20000) for _ in range(prompt)], 0)])
    times = []
    for i in range(steps):
        spans = [
            Span(
                s, [rng.randrange(1000, 20000) for _ in range(width)], prompt + i * width, width > 1
            )
            for s in range(n)
        ]
        t = time.perf_counter()
        step.forward(spans, [])
        times.append(time.perf_counter() - t)
    for s in range(n):
        step.release(s)
    return 1000 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seqs", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--prompt", type=int, default=100, help="prompt tokens per sequence")
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--kv-type", default="q8_0", choices=["q8_0", "f16"])
    p.add_argument("--kv-tokens", type=int, default=8192)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--per-sequence-streams", action="store_true")
    args = p.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    from toolwire.runtime import model_source
    from toolwire.services.decode.steps.ggml import GgmlStep

    src = model_source.resolve("embedded")
    step = GgmlStep(
        pathlib.Path(src.folder, src.gguf_file),
        max(args.seqs) + 1,
        kv_tokens=args.kv_tokens,
        kv_type=args.kv_type,
        threads=args.threads,
        unified=not args.per_sequence_streams,
    )
    rng = random.Random(0)
    layout = "per-sequence streams" if args.per_sequence_streams else "unified pool"
    for n in args.seqs:
        ms = median_step_ms(step, n, args.prompt, args.steps, rng)
        print(
            f"{args.kv_type} {layout}, {n} sequences, prompt {args.prompt}: step median "
            f"{ms:.1f} ms",
            flush=True,
        )


if __name__ == "__main__":
    main()
