"""No process of the session stack loads torch: the embedded model runs the ggml step, and
torch is 185 MB of each process that imports it (toolwire/runtime/without_torch.py). Checked
after the requests that load every grammar path there is: a strict tool call (the template's
compile workers, decode's matcher and jump-forward), a custom Lark tool (the gateway's parse
of the grammar) and a seeded, sampled answer (decode's sampler). The decode process, on the
ggml step, maps no tokenizer library either: its tokenizer is the GGUF's, llama.cpp's
(services/decode/gguf_tokenizer.py)."""

from __future__ import annotations

from pathlib import Path

from toolwire.stack.launcher import child_pids

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
NOTE = {
    "type": "custom",
    "custom": {
        "name": "take_note",
        "description": "Write a note.",
        "format": {
            "type": "grammar",
            "grammar": {"syntax": "lark", "definition": 'start: "note: " /[a-z ]{1,20}/'},
        },
    },
}


def _tree(pid: int) -> list[int]:
    pids = [pid]
    for child in child_pids(pid):
        pids += _tree(child)
    return pids


def _mapped(pid: int) -> set[str]:
    maps = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {line.split()[-1] for line in maps if "/" in line}


def _torch_files(pid: int) -> set[str]:
    return {p for p in _mapped(pid) if "libtorch" in p or "/torch/" in p}


def test_no_process_of_the_stack_loads_torch(stack, client):
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    call = client.chat.completions.create(
        model=stack.model, messages=ask, tools=[WEATHER], tool_choice="required", max_tokens=30
    )
    assert call.choices[0].message.tool_calls
    note = client.chat.completions.create(
        model=stack.model,
        messages=[{"role": "user", "content": "Note that the printer is broken."}],
        tools=[NOTE],
        tool_choice={"type": "custom", "custom": {"name": "take_note"}},
        max_tokens=30,
    )
    assert note.choices[0].message.tool_calls[0].custom.input.startswith("note: ")
    client.chat.completions.create(
        model=stack.model, messages=ask, temperature=0.8, seed=7, max_tokens=8
    )
    pids = _tree(stack.proc.pid)
    names = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[3:5] for pid in pids}
    assert any(argv == [b"serve", b"template"] for argv in names.values())
    workers = [p for p in pids if b"compile_worker" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert workers and len(pids) >= 6, names  # launcher, 4 services, the grammar workers
    loaded = {pid: files for pid in pids if (files := _torch_files(pid))}
    assert not loaded, {names[p]: sorted(f)[:3] for p, f in loaded.items()}
    (decode,) = [p for p, argv in names.items() if argv == [b"serve", b"decode"]]
    files = _mapped(decode)
    assert any("libllama" in f for f in files)  # the ggml step, whose vocabulary it reads
    assert not [f for f in files if "/tokenizers/" in f], sorted(files)
