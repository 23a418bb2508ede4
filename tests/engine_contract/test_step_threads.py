"""--threads: how many CPU threads one engine step uses, from the command line to the step. On
a 2-core machine the decode service shares the cores with the gateway and the extractor, so
the step's thread count is a deployment choice (README, The service split)."""

from __future__ import annotations

import pathlib

from toolwire.services.decode.ggml_step import GgmlStep
from toolwire.services.decode.server import make_engine
from toolwire.stack import model_source
from toolwire.stack.cli import parser


def test_the_decode_flag_reaches_the_engine():
    args = parser().parse_args(["serve", "decode", "--model", "embedded", "--threads", "1"])
    assert make_engine(args).threads == 1
    args = parser().parse_args(["serve", "decode", "--model", "embedded"])
    assert make_engine(args).threads is None  # every CPU the process may run on


def test_the_ggml_step_runs_on_that_many_threads():
    src = model_source.resolve("embedded")
    step = GgmlStep(pathlib.Path(src.folder, src.gguf_file), 2, kv_tokens=256, threads=1)
    try:
        assert step.lib.llama_n_threads(step.ctx) == 1
        assert step.lib.llama_n_threads_batch(step.ctx) == 1
    finally:
        step.close()


def test_toolwire_up_passes_it_to_every_decode_replica():
    from toolwire.stack.launcher import commands

    args = parser().parse_args(["up", "--model", "embedded", "--threads", "1"])
    args.decode_replicas = 2
    cmds = commands(args)
    for name in ("decode", "decode-1"):
        at = cmds[name].index("--threads")
        assert cmds[name][at + 1] == "1"
    assert "--threads" not in cmds["gateway"]
    args = parser().parse_args(["up", "--model", "embedded"])
    assert "--threads" not in commands(args)["decode"]
