"""A GGUF's tokenizer and config, read by transformers' GGUF reader.

That reader imports torch (its de-quantizer is torch code, imported with the rest). A process
that keeps torch out (toolwire/runtime/without_torch.py) runs it as a child, once per GGUF:
model_source caches what it wrote. `python -m toolwire.runtime.gguf_reader FOLDER FILE
[--tokenizer-to DIR] [--sizes]` saves the tokenizer and prints the config's sizes as JSON
(each when asked: the sizes are a parse of the whole file, 4.4 s, which only the template
service needs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def read(folder: str, gguf_file: str, tokenizer_to: str | None, sizes: bool) -> dict | None:
    from transformers import AutoConfig, AutoTokenizer

    if tokenizer_to:
        AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file).save_pretrained(tokenizer_to)
    if not sizes:
        return None
    cfg = AutoConfig.from_pretrained(folder, gguf_file=gguf_file)
    limit = getattr(cfg, "max_position_embeddings", None)
    return {
        "max_position_embeddings": None if limit is None else int(limit),
        "vocab_size": int(cfg.vocab_size),
    }


def read_in_child(
    folder: str, gguf_file: str, tokenizer_to: str | None, sizes: bool
) -> dict | None:
    """read() in a new process, where torch may load."""
    argv = [sys.executable, "-m", __name__, folder, gguf_file, *(["--sizes"] if sizes else [])]
    if tokenizer_to:
        argv += ["--tokenizer-to", tokenizer_to]
    env = dict(os.environ, TRANSFORMERS_NO_ADVISORY_WARNINGS="1", TRANSFORMERS_VERBOSITY="error")
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"reading {gguf_file} with transformers failed: {tail[0]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m toolwire.runtime.gguf_reader")
    ap.add_argument("folder")
    ap.add_argument("gguf_file")
    ap.add_argument("--tokenizer-to")
    ap.add_argument("--sizes", action="store_true")
    args = ap.parse_args()
    print(json.dumps(read(args.folder, args.gguf_file, args.tokenizer_to, args.sizes)))


if __name__ == "__main__":
    main()
