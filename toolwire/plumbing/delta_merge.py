"""Two unsent extractor deltas of one request made one, where their order allows.

Both ends of ExtractStream merge with this one rule (services/extractor/mux.py for a frame not
yet written, gateway/extractor_mux.py for deltas a request has not read yet), so the text a
client sees is the same whether or not anything lagged.
"""

from __future__ import annotations

from toolwire.grpc_gen.extractor.v1 import extractor_pb2 as pb


def merge(last: pb.ExtractResponse, new: pb.ExtractResponse) -> bool:
    """Append `new` to `last` (the same request's unsent delta) if the text order is kept:
    content after a call, or reasoning after content, stays a delta of its own."""
    if last.finish_reason:
        return False
    if last.tool_calls and (new.content or new.reasoning_content):
        return False
    if last.content and new.reasoning_content:
        return False
    last.content += new.content
    last.reasoning_content += new.reasoning_content
    calls = last.tool_calls
    for c in new.tool_calls:
        if calls and not c.id and calls[-1].index == c.index:
            calls[-1].arguments += c.arguments  # the same call's next fragment
        else:
            calls.append(c)
    if new.finish_reason:
        last.finish_reason = new.finish_reason
        last.finish_reason_code = new.finish_reason_code
    if new.HasField("usage"):
        last.usage.CopyFrom(new.usage)
    return True
