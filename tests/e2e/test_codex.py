"""Codex CLI, as its users run it, against the session's stack: `codex exec` with a model
provider at toolwire's base URL on the Responses API. Codex is the strictest Responses client:
stateless (`store: false`, the whole history every turn), `include:
["reasoning.encrypted_content"]`, `namespace` and hosted tool types, and it fails a turn whose
stream ends without `response.completed` or whose usage lacks a field."""

from __future__ import annotations

import json
import os
import subprocess

import lark
import pytest

from tests.codex_cli import RecordingProxy, codex_binary, codex_config, model_catalog

KEY_ENV = "TOOLWIRE_TEST_KEY"
INSTRUCTIONS = "You are a coding assistant. Answer briefly."
TURN_TIMEOUT = 420
RAMBLED = "Incomplete response returned, reason: max_output_tokens"  # a cold ~2,000-token prompt on a shared 2-core machine


@pytest.fixture(scope="module")
def codex(stack, client, tmp_path_factory):
    """Run Codex in one CODEX_HOME (so `resume --last` finds the first turn's session), through
    a relay that keeps what Codex sent (`codex.bodies`)."""
    try:
        binary = codex_binary()
    except RuntimeError as e:
        pytest.skip(str(e))
    work = tmp_path_factory.mktemp("codex-work")
    model = next(m.id for m in client.models.list() if m.id != stack.model)  # the model's own name
    proxy = RecordingProxy(stack.base_url)
    env = dict(os.environ, **{KEY_ENV: stack.api_key})

    def fresh() -> None:
        """A new CODEX_HOME: no sessions, so `resume --last` resumes the next turn's."""
        home = tmp_path_factory.mktemp("codex-home")
        catalog = home / "models.json"
        catalog.write_text(json.dumps(model_catalog(model, INSTRUCTIONS, 8192)))
        (home / "config.toml").write_text(codex_config(proxy.base_url, model, KEY_ENV, catalog))
        env["CODEX_HOME"] = str(home)

    fresh()

    def once(*args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
        done = subprocess.run(
            [str(binary), "exec", "--json", "--skip-git-repo-check", "-C", str(work), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TURN_TIMEOUT,
        )
        return done, [json.loads(ln) for ln in done.stdout.splitlines() if ln.startswith("{")]

    def run(*args: str) -> list[dict]:
        # Codex sends no temperature (1.0, as OpenAI's default), and now and then a 135M model
        # rambles to max_output_tokens; Codex fails such a turn. Another sample, up to four:
        # what is tested is that Codex reads toolwire's stream, which it did to say why.
        for _ in range(4):
            done, events = once(*args)
            if not rambled(events):
                break
        assert done.returncode == 0, (
            f"codex exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
        return events

    run.bodies = proxy.bodies
    run.once = once
    run.fresh = fresh
    yield run
    proxy.close()


def rambled(events: list[dict]) -> bool:
    return any(e.get("message") == RAMBLED for e in events)


def _turn(events: list[dict]) -> tuple[str, dict]:
    """The agent's message and the turn's usage from `codex exec --json`'s events."""
    failed = [e for e in events if e["type"] in ("turn.failed", "error")]
    assert not failed, failed
    texts = [
        e["item"]["text"]
        for e in events
        if e["type"] == "item.completed" and e["item"]["type"] == "agent_message"
    ]
    usage = [e["usage"] for e in events if e["type"] == "turn.completed"]
    assert texts and usage, events
    return texts[-1], usage[-1]


def test_codex_exec_completes_a_turn_with_its_tools_offered(codex):
    text, usage = _turn(codex("Reply with one word: hello."))
    assert text.strip()
    sent = codex.bodies[-1]
    assert sent["stream"] is True and sent["store"] is False
    assert sent["include"] == ["reasoning.encrypted_content"]
    offered = {t["name"]: t for t in sent["tools"]}
    assert offered["apply_patch"]["format"]["syntax"] == "lark"  # compiled for this turn
    assert "exec_command" in offered
    assert usage["input_tokens"] > 500  # Codex's instructions, tools and environment context
    assert 0 < usage["output_tokens"] <= 512


def test_codex_resume_sends_the_history_and_reuses_its_prefix(codex):
    # A rambled resume stays in the session, and the next resume carries it (a longer prompt
    # of noise, which rambles again): another sample starts the pair afresh.
    for _ in range(4):
        codex.fresh()
        first_text, first = _turn(codex("Reply with one word: hello."))
        done, events = codex.once("resume", "--last", "Now one more word.")
        if not rambled(events):
            break
    assert done.returncode == 0, f"codex exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    text, usage = _turn(events)
    assert text.strip()
    # The second turn carries the first (stateless: the whole history, store false) ...
    assert usage["input_tokens"] > first["input_tokens"] + first["output_tokens"]
    # ... and its prefix was in the cache: the first turn's tokens were not prefilled again.
    assert usage["cached_input_tokens"] >= first["input_tokens"]


def test_apply_patch_written_under_codex_grammar_parses_with_lark(codex, client, stack):
    """The apply_patch tool exactly as Codex sent it, chosen by name: what toolwire writes is a
    patch that the reference Lark parser accepts under Codex's own grammar."""
    if not codex.bodies:
        _turn(codex("Reply with one word: hello."))
    tool = next(t for t in codex.bodies[0]["tools"] if t["name"] == "apply_patch")
    example = "*** Begin Patch\n*** Add File: hello.txt\n+hi\n*** End Patch\n"
    r = client.responses.create(  # the example lets a 135M model end its patch
        model=stack.model,
        instructions=f"Edit files with apply_patch. An example patch:\n{example}",
        input="Create the file bye.txt with one line: bye",
        tools=[tool],
        tool_choice={"type": "custom", "name": "apply_patch"},
        max_output_tokens=256,
        temperature=0,
        store=False,
    )
    calls = [item for item in r.output if item.type == "custom_tool_call"]
    assert r.status == "completed", (r.status, r.incomplete_details, calls)
    assert [c.name for c in calls] == ["apply_patch"]
    patch = calls[0].input
    assert patch.startswith("*** Begin Patch\n")
    # Lark's Earley lexer refuses zero-width terminals: /(.*)/ as the equivalent /(.+)/?.
    grammar = tool["format"]["definition"].replace("/(.*)/", "/(.+)/?")
    lark.Lark(grammar, start="start").parse(patch)  # raises where the patch is not in it
