"""bench/same_output.py's comparison, on answers made up as the SDK hands them over (its own
types, parsed as it parses a response) and as plain dicts: what a client sees put together
from a stream and from a whole answer, the first field that differs, and which differences
the engine's nondeterminism explains."""

import openai
import pytest
from openai._models import construct_type  # how the SDK builds a response (untyped extras kept)
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from bench import same_output as so


def completion(message: dict, finish="tool_calls", usage=(200, 38, 0)) -> dict:
    prompt, done, cached = usage
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": done,
            "total_tokens": prompt + done,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


def chunk(delta: dict | None = None, finish=None, usage=None) -> dict:
    c = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    c["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    if usage:
        prompt, done, cached = usage
        c["usage"] = {
            "prompt_tokens": prompt,
            "completion_tokens": done,
            "total_tokens": prompt + done,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
    return c


def fn_call(call_id: str, name: str, arguments: str) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def fn_pieces(call_id: str, name: str, pieces: list[str], index: int = 0) -> list[dict]:
    """A function call as the gateway streams it: the opening piece with id, type and name,
    then argument fragments."""
    first = {"index": index, "id": call_id, "type": "function"}
    first["function"] = {"name": name, "arguments": ""}
    rest = [{"index": index, "function": {"arguments": p}} for p in pieces]
    return [chunk({"tool_calls": [t]}) for t in [first, *rest]]


ARGS = '{"location": "Paris", "unit": "c"}'
PIECES = ["{", '"location', '": ', '"Paris', '", "unit', '": ', '"c', '"}']


def test_streamed_function_call_is_the_whole_answer_but_its_id():
    whole = ChatCompletion.model_validate(
        completion(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [fn_call("call_a", "get_weather", ARGS)],
            }
        )
    )
    stream = [
        chunk({"role": "assistant", "content": None}),
        *fn_pieces("call_b", "get_weather", PIECES),
        chunk({}, finish="tool_calls"),
        chunk(usage=(200, 38, 199)),
    ]
    streamed = so.from_chunks(ChatCompletionChunk.model_validate(c) for c in stream)
    assert streamed.tool_calls == (so.Call("function", "get_weather", ARGS),)
    assert streamed.content is None and streamed.finish_reason == "tool_calls"
    assert (streamed.prompt_tokens, streamed.completion_tokens) == (200, 38)
    assert streamed.cached_tokens == 199 and so.from_completion(whole).cached_tokens == 0
    # Other ids, other cached_tokens: nothing a comparison counts.
    assert so.first_difference(so.from_completion(whole), streamed, across_modes=True) is None


def test_sdk_objects_and_dicts_read_the_same():
    body = completion({"role": "assistant", "content": "hi", "reasoning_content": "hm"}, "stop")
    from_sdk = so.from_completion(construct_type(type_=ChatCompletion, value=body))
    assert from_sdk == so.from_completion(body)
    assert from_sdk.reasoning_content == "hm"  # an untyped extra to the SDK, kept


def test_custom_call_streamed_and_whole_as_the_sdk_builds_them():
    whole = construct_type(
        type_=ChatCompletion,
        value=completion(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "custom",
                        "custom": {"name": "open_ticket", "input": "PRN-42"},
                    }
                ],
            }
        ),
    )
    stream = [
        chunk({"role": "assistant", "content": None}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_2",
                        "type": "custom",
                        "custom": {"name": "open_ticket", "input": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "custom": {"input": "PRN"}}]}),
        chunk({"tool_calls": [{"index": 0, "custom": {"input": "-42"}}]}),
        chunk({}, finish="tool_calls"),
        chunk(usage=(200, 38, 0)),
    ]
    streamed = so.from_chunks(construct_type(type_=ChatCompletionChunk, value=c) for c in stream)
    assert streamed.tool_calls == (so.Call("custom", "open_ticket", "PRN-42"),)
    assert so.first_difference(so.from_completion(whole), streamed, across_modes=True) is None
    # The same input under a function call's type is a difference.
    as_function = so.from_completion(
        completion({"role": "assistant", "tool_calls": [fn_call("c", "open_ticket", "PRN-42")]})
    )
    d = so.first_difference(so.from_completion(whole), as_function)
    assert d == so.Difference("tool_calls[0].type", "custom", "function")


def test_parallel_calls_stream_by_index_and_content_and_reasoning_concatenate():
    stream = [
        chunk({"role": "assistant", "content": None}),
        chunk({"reasoning_content": "let me "}),
        chunk({"reasoning_content": "think"}),
        chunk({"content": "Sure"}),
        chunk({"content": ": "}),
        *fn_pieces("a", "get_weather", ['{"location": "Oslo"', "}"], index=0),
        *fn_pieces("b", "get_time", ["{}"], index=1),
        chunk({}, finish="tool_calls"),
    ]
    s = so.from_chunks(stream)
    assert s.reasoning_content == "let me think" and s.content == "Sure: "
    assert s.tool_calls == (
        so.Call("function", "get_weather", '{"location": "Oslo"}'),
        so.Call("function", "get_time", "{}"),
    )
    assert s.prompt_tokens is None  # no usage chunk: nothing made up


def test_first_difference_names_the_first_field_a_client_reads():
    base = so.Seen(
        content=None,
        tool_calls=(so.Call("function", "f", '{"a": 1}'),),
        finish_reason="tool_calls",
        prompt_tokens=5,
        completion_tokens=9,
    )
    other_args = so.Seen(**{**vars(base), "tool_calls": (so.Call("function", "f", '{"a": 2}'),)})
    assert so.first_difference(base, other_args) == so.Difference(
        "tool_calls[0].arguments", '{"a": 1}', '{"a": 2}'
    )
    # Arguments and the finish reason both differ: the call is named, it comes first.
    both = so.Seen(**{**vars(other_args), "finish_reason": "length"})
    assert so.first_difference(base, both).field == "tool_calls[0].arguments"
    fewer = so.Seen(**{**vars(base), "tool_calls": ()})
    assert so.first_difference(base, fewer) == so.Difference("tool_calls (count)", 1, 0)
    tokens = so.Seen(**{**vars(base), "completion_tokens": 10, "cached_tokens": 4})
    assert so.first_difference(base, tokens) == so.Difference("usage.completion_tokens", 9, 10)
    assert so.first_difference(base, so.Seen(**{**vars(base), "cached_tokens": 4})) is None


def test_null_content_is_no_streamed_content_only_across_modes():
    whole, streamed = so.Seen(content=None), so.Seen(content="")
    assert so.first_difference(whole, streamed, across_modes=True) is None
    assert so.first_difference(whole, streamed) == so.Difference("content", None, "")
    assert so.first_difference(so.Seen(content="a"), so.Seen(content="b"), across_modes=True)


def test_errors_compare_by_status_code_and_param_not_wording():
    def bad(message: str) -> openai.BadRequestError:
        import httpx

        req = httpx.Request("POST", "http://x/v1/chat/completions")
        body = {"message": message, "code": "invalid_grammar", "param": "tools[1].custom"}
        return openai.BadRequestError(message, response=httpx.Response(400, request=req), body=body)

    a, b = so.from_error(bad("bad regex")), so.from_error(bad("the regex is bad"))
    assert a.error == "400 invalid_grammar tools[1].custom" and so.first_difference(a, b) is None
    assert so.first_difference(a, so.Seen(content="x")).field == "error"


def test_difference_shows_where_two_texts_part():
    d = so.Difference("content", "x" * 100 + "abc", "x" * 100 + "abd")
    shown = d.show("old", "new")
    assert "from char 102" in shown and "'abc'" not in shown and "abc" in shown and "abd" in shown


def test_a_difference_is_the_engines_when_the_stack_differs_with_itself_in_that_wave():
    same, off = so.Seen(content="a"), so.Seen(content="b")
    # C=2: waves {0, 1} and {2, 3}; request 1 differed between two runs of one stack.
    own, wave = so.nondeterministic([same] * 4, [same, off, same, same], 2)
    assert own == {1} and wave == {0, 1}
    d = so.first_difference(same, off)
    assert so.verdict(d, 1, own, wave) == so.ENGINE
    assert so.verdict(d, 0, own, wave) == so.WAVE
    assert so.verdict(d, 2, own, wave) == so.REAL
    assert so.verdict(None, 2, own, wave) == so.MATCH


def runs_for(n: int, c: int, answers: dict) -> dict:
    """Every run of compare's input the same answer, but those answers names."""
    base = [so.Seen(content=f"r{i}") for i in range(n)]
    out = {}
    for stack in ("old", "new", "new again"):
        for stream in (False, True):
            out[(stack, stream, c)] = [
                answers.get((stack, stream, i), s) for i, s in enumerate(base)
            ]
    return out


def test_compare_fails_on_a_path_difference_alone():
    reqs = so.requests(4)
    # Request 0 differs old/new, streamed, and the new stack agreed with itself: a failure.
    # Request 3 differs old/new too, but the new stack differed with itself on it: the engine's.
    runs = runs_for(
        4,
        1,
        {
            ("new", True, 0): so.Seen(content="r0 and more"),
            ("new again", True, 0): so.Seen(content="r0 and more"),
            ("new", False, 3): so.Seen(content="x"),
        },
    )
    rows, findings = so.compare(reqs, runs, [1])
    bad = so.failed(findings)
    assert [(f.request.index, f.what, f.stream) for f in bad] == [
        (0, "old/new", True),
        (0, "stream/non-stream (new)", None),
    ]
    assert bad[0].diff.field == "content"
    engine = [f for f in findings if f.request.index == 3 and f.what == "old/new"]
    assert [f.verdict for f in engine] == [so.ENGINE]
    row0 = next(r for r in rows if r.workload == reqs[0].workload and r.stream)
    assert (
        row0.old_new == {so.REAL: 1}
        and row0.sns_new == {so.REAL: 1}
        and row0.sns_old == {so.MATCH: 1}
    )


def test_a_stream_split_the_old_stack_has_too_is_reported_not_failed():
    reqs = so.requests(2)
    split = so.Seen(content="r1 streamed")
    runs = runs_for(2, 1, {(s, True, 1): split for s in ("old", "new", "new again")})
    rows, findings = so.compare(reqs, runs, [1])
    assert {(f.what, f.verdict) for f in findings} == {
        ("stream/non-stream (old)", so.REAL),
        ("stream/non-stream (new)", so.ALSO_OLD),
    }
    assert so.failed(findings) == []
    row = so.table(rows, ("old", "new")).splitlines()[-1]
    assert row.endswith("| 0/1 (MISMATCH 1) | 0/1 (also old 1) | 0/1 |"), row


@pytest.mark.parametrize("n", [len(so.WORKLOADS), 2 * len(so.WORKLOADS) + 1])
def test_requests_take_every_workload_in_turn_each_with_its_own_seed(n):
    reqs = so.requests(n)
    assert [r.workload for r in reqs[: len(so.WORKLOADS)]] == list(so.WORKLOADS)
    assert len({r.kwargs["seed"] for r in reqs}) == n
    assert all("model" not in r.kwargs and "stream" not in r.kwargs for r in reqs)


def test_nondeterminism_in_either_mode_or_an_answer_the_old_stack_gave_explains_a_difference():
    reqs = so.requests(3)
    a, b = so.Seen(content="A"), so.Seen(content="B")
    runs = runs_for(
        3,
        1,
        {
            # Request 0: the new stack differed with itself not streamed; old/new differ streamed.
            ("new", False, 0): a,
            ("new", True, 0): b,
            ("new again", True, 0): b,
            # Request 1: both modes steady on the new stack, but its answer is one the old gave.
            ("old", False, 1): a,
            ("old", True, 1): b,
            ("new", False, 1): a,
            ("new", True, 1): a,
            ("new again", False, 1): a,
            ("new again", True, 1): a,
            # Request 2: an answer the old stack never gave, the new stack steady: the path's.
            **{(s, m, 2): b for s in ("new", "new again") for m in (False, True)},
        },
    )
    _, findings = so.compare(reqs, runs, [1])
    old_new = {(f.request.index, f.stream): f.verdict for f in findings if f.what == "old/new"}
    assert old_new == {
        (0, False): so.ENGINE,
        (0, True): so.ENGINE,
        (1, True): so.OLD_GAVE_IT,
        (2, False): so.REAL,
        (2, True): so.REAL,
    }
    assert {(f.request.index, f.stream) for f in so.failed(findings)} == {(2, False), (2, True)}
