"""Where the words of toolwire/vocabulary.py meet their proto enums (common.proto).

vocabulary.py stays a leaf (it imports nothing of toolwire); the generated stubs are not, so
the conversions live here. A proto field carrying a finish reason travels twice for now: the
old `string finish_reason` and the enum `finish_reason_code` beside it. Writers set both
(`set_finish`); readers keep reading the string until every one of them has moved.
"""

from __future__ import annotations

from toolwire.grpc_gen.common.v1 import common_pb2 as common
from toolwire.vocabulary import FinishReason

_TO_PROTO: dict[str, common.FinishReason] = {
    FinishReason.STOP: common.FINISH_REASON_STOP,
    FinishReason.LENGTH: common.FINISH_REASON_LENGTH,
    FinishReason.ABORT: common.FINISH_REASON_ABORT,
    FinishReason.TOOL_CALLS: common.FINISH_REASON_TOOL_CALLS,
}
_FROM_PROTO: dict[int, FinishReason] = {v: FinishReason(k) for k, v in _TO_PROTO.items()}


def finish_to_proto(reason: FinishReason | str | None) -> common.FinishReason:
    """The FinishReason enum value of `reason` (a member, or the string a proto carried);
    FINISH_REASON_UNSPECIFIED for none, and for a reason the proto has no value for
    (content_filter, or a string from a newer peer)."""
    return _TO_PROTO.get(reason or "", common.FINISH_REASON_UNSPECIFIED)


def finish_from_proto(value: int) -> FinishReason | None:
    """The member a proto enum value names; None for UNSPECIFIED (or a value from a newer
    peer)."""
    return _FROM_PROTO.get(value)


def set_finish(msg, reason: FinishReason | str) -> None:
    """Set a message's `finish_reason` string and its `finish_reason_code` enum together."""
    msg.finish_reason = reason
    msg.finish_reason_code = finish_to_proto(reason)
