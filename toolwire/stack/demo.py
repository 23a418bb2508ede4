"""`make up`: start the whole stack, run OpenAI's weather example against it with the official
SDK, then keep serving until Ctrl-C (or exit at once with --exit-after-demo)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from typing import TYPE_CHECKING

from toolwire.stack.launcher import wait_for_health

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get current temperature for a given location.",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "City and country e.g. Bogotá, Colombia",
                    }
                },
                "required": ["location"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    }
]


def get_weather(location: str) -> str:
    return f"14 degrees Celsius and light rain in {location}"  # the demo's stand-in weather API


def weather_flow(base_url: str, model: str, api_key: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=api_key)
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "What is the weather like in Paris today?"}
    ]
    print(f"\n>>> user: {messages[0]['content']}")
    completion = client.chat.completions.create(
        model=model,
        messages=messages,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
    )
    message = completion.choices[0].message
    # The SDK sends its own reply model as a message; its types take only the params.
    messages.append(message)  # type: ignore[arg-type]
    assert message.tool_calls is not None, "tool_choice=required: the reply calls a tool"
    for call in message.tool_calls:
        assert call.type == "function", "TOOLS are functions"
        args = json.loads(call.function.arguments)
        print(f"<<< tool call {call.id}: {call.function.name}({call.function.arguments})")
        result = get_weather(args["location"])
        print(f">>> tool result: {result}")
        messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    final = client.chat.completions.create(
        model=model, messages=messages, tools=TOOLS, tool_choice="none", temperature=0
    )
    print(f"<<< assistant: {final.choices[0].message.content}")
    assert final.usage is not None, "the gateway reports usage"
    print(
        f"    (finish_reason={final.choices[0].finish_reason}, usage={final.usage.total_tokens} "
        "tokens)\n"
    )


def _tail(path: str, lines: int = 20) -> str:
    """The end of the services' log, for a start that failed."""
    try:
        with open(path, errors="replace") as f:
            end = f.readlines()[-lines:]
    except OSError:
        return ""
    return f"last lines of {path}:\n" + "".join(end)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--exit-after-demo", action="store_true")
    args, rest = p.parse_known_args()
    # The transcript shows the conversation; the services' own log lines go to a file.
    log_file = os.path.abspath("toolwire-up.log")
    up = ["up", "--port", str(args.port), "--log-file", log_file]
    cmd = [sys.executable, "-m", "toolwire.stack.cli", *up, *rest]
    print(f"starting toolwire (services' logs: {log_file})", flush=True)
    proc = subprocess.Popen(cmd)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        try:
            health = wait_for_health(f"http://127.0.0.1:{args.port}/health", proc)
        except RuntimeError as e:
            raise SystemExit(f"{e}\n{_tail(log_file)}") from None
        model = health["models"][0]
        weather_flow(f"http://127.0.0.1:{args.port}/v1", model, "not-needed-on-loopback")
        if args.exit_after_demo:
            return 0
        print(
            f"toolwire keeps serving at http://127.0.0.1:{args.port}/v1 (model {model}); "
            "Ctrl-C stops it.",
            flush=True,
        )
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())
