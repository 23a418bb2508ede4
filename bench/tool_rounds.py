"""The answer after a tool result, scored: a set of tool rounds (a user question, the assistant's
call, the tool's result), each asked for the final answer with tool_choice auto and none, against
any OpenAI-compatible server. An answer scores when it finishes by itself (`stop`), is grounded
(it states the result's key fact) and is clean (no tool-call or result markup, no JSON).

    python -m bench.tool_rounds                 # toolwire (started here) and llama.cpp, one run
    python -m bench.tool_rounds --only toolwire

The rounds are toolwire's own; they are not the set an issue keeps apart for acceptance.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass

MARKUP = re.compile(r"<\s*/?\s*[A-Za-z_|][\w|:.-]*[^<>]*>|\{\s*\"|\[TOOL|```")


@dataclass(frozen=True)
class Round:
    name: str
    description: str
    properties: dict
    question: str
    arguments: dict
    result: str
    facts: tuple[str, ...]  # an answer is grounded when it contains one of these

    def tool(self) -> dict:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "strict": True,
                "parameters": {
                    "type": "object",
                    "properties": self.properties,
                    "required": list(self.properties),
                    "additionalProperties": False,
                },
            },
        }

    def messages(self, call_id: str = "call_" + "r0und" * 4 + "0000") -> list[dict]:
        return [
            {"role": "user", "content": self.question},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": self.name, "arguments": json.dumps(self.arguments)},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": self.result},
        ]


S = {"type": "string"}
ROUNDS = [
    Round(
        "get_exchange_rate",
        "Get the current exchange rate between two currencies.",
        {"base": S, "quote": S},
        "How many US dollars is one euro worth right now?",
        {"base": "EUR", "quote": "USD"},
        "1 EUR = 1.08 USD",
        ("1.08",),
    ),
    Round(
        "track_package",
        "Look up where a parcel is, by its tracking number.",
        {"tracking_number": S},
        "Where is my parcel 1Z999AA10123456784?",
        {"tracking_number": "1Z999AA10123456784"},
        "Out for delivery, expected before 6 pm today",
        ("6 pm", "6pm", "out for delivery"),
    ),
    Round(
        "get_population",
        "Get the population of a city.",
        {"city": S},
        "How many people live in Lisbon?",
        {"city": "Lisbon"},
        "Lisbon: 545,000 inhabitants (city proper)",
        ("545,000", "545000", "545 000"),
    ),
    Round(
        "get_flight_status",
        "Get the status of a flight by its flight number.",
        {"flight_number": S},
        "Is flight LH404 on time?",
        {"flight_number": "LH404"},
        "LH404 is delayed by 45 minutes; new departure 14:25 from gate B22",
        ("45 minutes", "14:25"),
    ),
    Round(
        "get_match_result",
        "Get the latest result of a football team.",
        {"team": S},
        "How did Ajax do in their last match?",
        {"team": "Ajax"},
        "Ajax 3 - 1 PSV (Eredivisie, Sunday)",
        ("3-1", "3 - 1", "3 to 1", "3–1"),
    ),
    Round(
        "check_stock",
        "Check how many units of a product are in stock.",
        {"product": S},
        "Do you still have blue umbrellas?",
        {"product": "blue umbrella"},
        "blue umbrella: 12 units in stock",
        ("12",),
    ),
    Round(
        "get_recipe_time",
        "Get how long a recipe takes to cook.",
        {"dish": S},
        "How long does it take to make a lasagne?",
        {"dish": "lasagne"},
        "Lasagne: 1 hour 15 minutes in total",
        ("1 hour 15", "75 minutes", "1h15"),
    ),
    Round(
        "get_air_quality",
        "Get the air quality index of a city.",
        {"city": S},
        "What is the air quality in Delhi today?",
        {"city": "Delhi"},
        "Delhi air quality index: 182 (unhealthy)",
        ("182",),
    ),
]


@dataclass
class Answer:
    round: str
    mode: str
    text: str
    finish: str
    tokens: int
    seconds: float

    @property
    def grounded(self) -> bool:
        low = self.text.lower()
        return any(f.lower() in low for f in ROUNDS_BY_NAME[self.round].facts)

    @property
    def clean(self) -> bool:
        return bool(self.text.strip()) and not MARKUP.search(self.text)

    @property
    def good(self) -> bool:
        return self.finish == "stop" and self.grounded and self.clean


ROUNDS_BY_NAME = {r.name: r for r in ROUNDS}


def ask(client, model: str, rnd: Round, mode: str, max_tokens: int | None = 400) -> Answer:
    kw = {"max_tokens": max_tokens} if max_tokens else {}
    t = time.perf_counter()
    c = client.chat.completions.create(
        model=model,
        messages=rnd.messages(),
        tools=[rnd.tool()],
        tool_choice=mode,
        temperature=0,
        **kw,
    )
    choice = c.choices[0]
    text = choice.message.content or ""
    if choice.message.tool_calls:
        text += " ".join(f"[TOOL CALL {tc.function.name}]" for tc in choice.message.tool_calls)
    return Answer(
        rnd.name,
        mode,
        text,
        choice.finish_reason,
        c.usage.completion_tokens,
        time.perf_counter() - t,
    )


def run(
    client, model: str, modes=("auto", "none"), rounds=ROUNDS, max_tokens: int | None = 400
) -> list[Answer]:
    return [ask(client, model, r, m, max_tokens) for r in rounds for m in modes]


def summary(answers: list[Answer]) -> dict:
    n = len(answers)
    return {
        "n": n,
        "stop": sum(a.finish == "stop" for a in answers),
        "grounded": sum(a.grounded for a in answers),
        "clean": sum(a.clean for a in answers),
        "all_three": sum(a.good for a in answers),
        "tokens_p50": sorted(a.tokens for a in answers)[n // 2],
    }


def table(results: dict[str, list[Answer]]) -> str:
    lines = [
        "| server | answered with stop | grounded | clean | all three | tokens p50 |",
        "|---|---|---|---|---|---|",
    ]
    for server, answers in results.items():
        s = summary(answers)
        lines.append(
            f"| {server} | {s['stop']}/{s['n']} | {s['grounded']}/{s['n']} | "
            f"{s['clean']}/{s['n']} | {s['all_three']}/{s['n']} | {s['tokens_p50']} |"
        )
    return "\n".join(lines)


def main() -> None:
    from openai import OpenAI

    from toolwire.runtime.model_source import resolve
    from toolwire.stack.launcher import free_port, wait_for_health

    from . import llama_cpp
    from .run import KEY, start_stack

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--only", choices=["toolwire", "llama.cpp"])
    p.add_argument("--show", action="store_true", help="print every answer")
    args = p.parse_args()
    results: dict[str, list[Answer]] = {}
    if args.only != "llama.cpp":
        stack, url, model = start_stack(
            argparse.Namespace(model="embedded", dtype="auto", concurrency=[4])
        )
        try:
            results["toolwire"] = run(OpenAI(base_url=url, api_key=KEY), model)
        finally:
            stack.terminate()
            stack.wait(30)
    if args.only != "toolwire":
        source = resolve("embedded")
        port = free_port()
        server = llama_cpp.start(
            f"{source.folder}/{source.gguf_file}",
            port,
            slots=1,
            threads=2,
            ctx_per_slot=8192,
            extra=("--jinja",),
        )
        try:
            wait_for_health(f"http://127.0.0.1:{port}/health", server)
            client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
            results["llama.cpp"] = run(client, "smollm2")
        finally:
            server.terminate()
            server.wait(30)
    for server, answers in results.items():
        for a in answers if args.show else ():
            print(
                f"[{server}] {a.round}/{a.mode} {a.finish} {a.tokens} tok "
                f"{'ok' if a.good else '--'}: {a.text!r}"
            )
    print(table(results))


if __name__ == "__main__":
    main()
