"""The step's options from the command line to the step. --threads: how many CPU threads one
engine step uses (on a 2-core machine the decode service shares the cores with the gateway and
the extractor, so it is a deployment choice: docs/performance.md, The service split). --kv-type: the ggml
step's KV cache type (f16 prefills about a fifth faster than q8_0 for twice the bytes)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from toolwire.runtime import model_source
from toolwire.services.decode.config import DecodeConfig
from toolwire.services.decode.server import make_engine
from toolwire.services.decode.steps import Span
from toolwire.services.decode.steps.ggml import GgmlStep
from toolwire.stack.cli import parser


def test_the_decode_flag_reaches_the_engine():
    args = parser().parse_args(["serve", "decode", "--model", "embedded", "--threads", "1"])
    assert make_engine(DecodeConfig.from_args(args)).threads == 1
    args = parser().parse_args(["serve", "decode", "--model", "embedded"])
    assert (
        make_engine(DecodeConfig.from_args(args)).threads is None
    )  # every CPU the process may run on
    assert (
        make_engine(DecodeConfig.from_args(args)).kv_type is None
    )  # the ggml step's default, q8_0
    args = parser().parse_args(["serve", "decode", "--model", "embedded", "--kv-type", "f16"])
    assert make_engine(DecodeConfig.from_args(args)).kv_type == "f16"


def test_a_kv_type_on_the_torch_step_is_refused():
    """The torch step keeps its KV cache in the model's dtype: a --kv-type there would be a
    flag that does nothing, so the decode service refuses to start with it."""
    args = parser().parse_args(
        ["serve", "decode", "--model", "random:tiny", "--step", "torch", "--kv-type", "f16"]
    )
    with pytest.raises(SystemExit, match="only the ggml step has a KV type"):
        make_engine(DecodeConfig.from_args(args)).load()


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
    assert "--kv-type" not in cmds["decode"]  # the decode service's default
    args = parser().parse_args(["up", "--model", "embedded", "--kv-type", "f16"])
    assert commands(args)["decode"][commands(args)["decode"].index("--kv-type") + 1] == "f16"
    args = parser().parse_args(["up", "--model", "embedded"])
    assert "--threads" not in commands(args)["decode"]


def test_replicas_on_one_machine_share_its_cpus():
    """Without --threads, several decode replicas split the CPUs between them: a thread per
    CPU in each stalls every one of them (two 2-thread decodes on 2 cores: 45-470 ms a token
    against 8-10 ms alone)."""
    from toolwire.runtime.cpus import usable_cpus
    from toolwire.stack.launcher import commands

    for n in (2, 3):
        args = parser().parse_args(["up", "--model", "embedded", "--decode-replicas", str(n)])
        cmds = commands(args)
        names = ["decode"] + [f"decode-{i}" for i in range(1, n)]
        for name in names:
            flag = cmds[name][cmds[name].index("--threads") + 1]
            assert flag == str(max(1, usable_cpus() // n))


def test_an_f16_kv_cache_gives_the_logits_of_q8_0():
    """Both KV types on one prompt with a clear answer: the same top token and near-equal
    logits (q8_0 rounds each cached key and value to 8 bits). A prompt of arbitrary ids had a
    three-way near-tie that the two types, and AVX2 against AVX-512 kernels, ordered
    differently."""
    src = model_source.resolve("embedded")
    prompt = model_source.load_tokenizer(src).encode(
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\nThe capital of France is"
    )
    rows, sizes = [], []
    for kv_type in ("q8_0", "f16"):
        step = GgmlStep(pathlib.Path(src.folder, src.gguf_file), 2, kv_tokens=256, kv_type=kv_type)
        try:
            rows.append(step.forward([], [Span(0, prompt, 0)])[0])
            sizes.append(step.lib.llama_state_seq_get_size(step.ctx, 0))
        finally:
            step.close()
    assert sizes[1] > 1.7 * sizes[0]  # 2 bytes a value against 34 for 32: the type took
    assert int(rows[0].argmax()) == int(rows[1].argmax())
    a, b = rows[0].astype(np.float64), rows[1].astype(np.float64)
    assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99  # cosine similarity
