"""Every constraint toolwire builds, in each dialect, under the xgrammar that will compile it:
the structural-tag dialect under toolwire's xgrammar 0.2.8, the EBNF dialect under xgrammar
0.1.25 (TensorRT-LLM 1.2's pin, installed for this test into a throwaway folder) and 0.2.8.

Compiling is not enough: a grammar 0.1.25 reads differently (it ignores TagDispatch's
`excludes`, it mis-reads non-ASCII character classes) compiles fine. So each constraint is also
sampled by random walks under both versions, and every sample and hand-written probe must get
the same verdict (whole, prefix, refused) from the structural tag under 0.2.8 and from the
grammar under 0.1.25 and 0.2.8."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolwire.constraints.compiler import in_dialect
from toolwire.constraints.dialects import EBNF, DialectError
from toolwire.constraints.kinds import Constraint, Kind

from .constraint_shapes import shapes

PROBE = Path(__file__).with_name("dialect_probe.py")
OLD = "0.1.25"
# Strings each constraint is asked about besides the random samples: the markers the
# constraints ban from free text, and JSON with more whitespace than toolwire allows.
PROBES = [
    "hello",
    "hi <tool_call>",
    "x <tool_response>",
    "a </tool",
    "<think>a</think>b",
    '{"answer":  "x"}',
    '{"answer": "x"}',
    "[TOOL_CALLS] [",
    "<|python_tag|>{",
    '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>',
]


@pytest.fixture(scope="module")
def old_xgrammar(tmp_path_factory) -> Path:
    """xgrammar 0.1.25 alone in a throwaway folder, put first on the path of the probe's
    interpreter (its own dependencies are toolwire's)."""
    target = tmp_path_factory.mktemp("xgrammar-0.1.25")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--disable-pip-version-check",
            "--target",
            str(target),
            f"xgrammar=={OLD}",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"pip could not install xgrammar {OLD}:\n{done.stderr}"
    return target


def probe(
    tmp_path: Path, constraints: list[dict], probes: dict, walks: int, path: Path | None = None
) -> dict:
    job, out = tmp_path / "job.json", tmp_path / "out.json"
    job.write_text(
        json.dumps({"constraints": constraints, "probes": probes, "walks": walks, "seed": 1})
    )
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.pathsep.join([str(path)] + [p for p in sys.path if p])
    version = subprocess.run(
        [sys.executable, "-c", "import importlib.metadata as m; print(m.version('xgrammar'))"],
        env=env,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert version == (OLD if path else "0.2.8")
    done = subprocess.run(
        [sys.executable, str(PROBE), str(job), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def test_every_constraint_means_the_same_in_both_dialects(tmp_path, old_xgrammar):
    native = {s["id"]: s for s in shapes()}
    grammars, refused = {}, {}
    for sid, s in native.items():
        try:
            c = in_dialect(Constraint(Kind(s["kind"]), s["text"]), EBNF)
            grammars[sid] = {"id": sid, "kind": c.kind.value, "text": c.text}
        except DialectError as e:
            refused[sid] = str(e)

    # Refused, and only there: deepseek_v3's and v3.1's free text, whose markers are non-ASCII,
    # and DSML's every shape that bans its markers from free text or holds a raw string value
    # (free text up to </｜DSML｜parameter>): all but an answer held to a schema.
    def refusable(sid: str) -> bool:
        family, mode, rf = sid.split("/")[0], sid.split("/")[1], sid.split("/")[-1]
        if family in ("deepseek_v3", "deepseek_v31"):
            return mode in ("auto", "none") and rf == "text"
        if family in ("deepseek_v32", "deepseek_v4"):
            return not (mode == "none" and rf == "json_schema")
        return False

    assert set(refused) == {sid for sid in native if refusable(sid)}, refused
    assert len(grammars) > 300

    ids = sorted(grammars)
    new_samples = probe(tmp_path, [native[i] for i in ids], {}, walks=3)
    old_samples = probe(tmp_path, [grammars[i] for i in ids], {}, walks=3, path=old_xgrammar)
    errors = {
        i: r["error"] for r in (new_samples, old_samples) for i, r in r.items() if "error" in r
    }
    assert not errors, errors  # everything compiles under both versions

    asked = {
        i: sorted(set(PROBES + new_samples[i]["samples"] + old_samples[i]["samples"])) for i in ids
    }
    reference = probe(tmp_path, [native[i] for i in ids], asked, walks=0)
    on_old = probe(tmp_path, [grammars[i] for i in ids], asked, walks=0, path=old_xgrammar)
    on_new = probe(tmp_path, [grammars[i] for i in ids], asked, walks=0)
    differ = [
        (i, s, a, b, c)
        for i in ids
        for s, a, b, c in zip(
            asked[i], reference[i]["verdicts"], on_old[i]["verdicts"], on_new[i]["verdicts"]
        )
        if not a == b == c
    ]
    assert not differ, differ[:10]

    # Not vacuous: the walks reached calls, and the probes met both verdicts.
    samples = [s for i in ids for s in new_samples[i]["samples"] + old_samples[i]["samples"]]
    assert sum("<tool_call>" in s for s in samples) > 20
    assert sum("[TOOL_CALLS]" in s for s in samples) > 20
    verdicts = [v for i in ids for v in reference[i]["verdicts"]]
    assert verdicts.count("no") > 100 and verdicts.count("full") > 500
