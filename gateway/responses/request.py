"""Pydantic models of the Responses API create body (`POST /v1/responses`), as the official SDK
(openai-python 3.63 `types/responses/`), the Agents SDK and Codex send it.

Like gateway/openai_models.py they check shape only; what a value means is decided in
to_chat.py (the Responses-only fields) and checked on the ChatCompletionRequest proto
(toolwire/request/checks.py), whose parameter names Turn.translate turns back into this body's.
Unions are tagged with their class names (a callable discriminator where a shape has no `type`,
e.g. the easy message form), so that gateway/app.py `_param(loc, model=ResponseCreateRequest)`
walks a pydantic error's location to `input[2].call_id`, not to the alternative pydantic tried.
Item and part types this module does not model land in a catch-all model (OtherItem,
OtherPart, OtherTool, OtherFormat) that to_chat.py refuses by name (`input[3].type`).

Every top-level field, and what toolwire does with it (H = honoured: mapped into the proto or
used by the presentation; A = accepted because it changes nothing toolwire produces; R = refused
with a 400 naming it; to_chat.check_request holds the refusals):

  model                  H  the served model (404 from the orchestrator if it is not)
  input                  H  str = one user message; items -> messages (to_chat.py)
  instructions           H  a leading system message, this turn only (never stored in history)
  tools                  H  function, custom, namespace (flattened `ns__name`); hosted types R
                            (or left out with --drop-hosted-tools); function `strict` omitted =
                            strict when the schema already meets OpenAI's strict rules and
                            toolwire can enforce it (tools.default_strict)
    .defer_loading       A  the tool is offered from the start (no tool_search to load it)
    .output_schema       A  describes results the client sends back; generation is unchanged
    .allowed_callers     A  when it includes "direct" (or is absent); ["programmatic"] only: R
    .async               R  when true (toolwire has no asynchronous calls)
    namespace description   not shown to the model (its tools' flat names carry the namespace)
  tool_choice            H  none/auto/required, function, custom, allowed_tools; hosted R
  parallel_tool_calls    H  proto; echoed (default true)
  max_output_tokens      H  max_completion_tokens
  temperature, top_p     H  proto
  text.format            H  text | json_object | json_schema (flat; strict omitted = false, as
                            the SDK documents "if set to true"); its `description` A (not shown
                            to the model, as on the chat path)
  text.verbosity         A  "medium" (OpenAI's default: what the model does anyway);
  verbosity (top level)     "low"/"high" R: an open model has no verbosity control, so taking it
                            would pretend. The top-level key is the SDK's parse() quirk.
  reasoning.effort       H  proto reasoning_effort (formats/thinking.py maps or refuses it)
  reasoning.summary,     A  "auto" / "none": no summarizer runs; the reasoning itself comes
  .generate_summary         back as the reasoning item's `content` with `summary: []`;
                            "concise" / "detailed" R (a summary toolwire cannot write)
  reasoning.context      H  "current_turn": reasoning before the last user message is left out;
                            "auto" A (the template's choice); "all_turns" R (the model's
                            template may drop earlier reasoning; toolwire cannot promise it)
  reasoning.mode         A  "standard"; anything else ("pro") R
  include                H  reasoning.encrypted_content (the presentation emits it);
                            message.output_text.logprobs R (no logprobs); the hosted-tool and
                            image includes A (no such item can be produced)
  stream                 H  the presentation streams; nothing in the proto
  stream_options         A  only with stream (as chat); include_obfuscation true R (toolwire
                            sends no obfuscation padding; omitted = none, unlike OpenAI)
  store                  H  the presentation stores (default true)
  previous_response_id   H  the caller loads the stored chain as `history`
  metadata               H  echoed and stored; OpenAI's limits (16 pairs, 64/512 chars) checked
  user, safety_identifier,
  prompt_cache_key,      A  identify callers or tune OpenAI's caching; toolwire's prefix cache
  prompt_cache_retention,   is automatic and serves the same output
  client_metadata (Codex)
  prompt_cache_options   A  except `prewarm: true` R (it asks for no generation at all)
  service_tier           A  "auto" / "default" (one tier); "flex", "priority", ... R
  max_tool_calls         A  counts built-in tool calls only, and none run here
  truncation             A  "disabled" (the default: an oversized input is a 400); "auto" R
  image, access_programs A  image compression / OpenAI access tiers: nothing here uses them
  background, background_options, conversation, prompt, context_management, moderation
                         R  when set (OpenAI platform features toolwire has no part of)
  top_logprobs           R  above 0 (no logprobs)
  anything else          R  "Unrecognized request argument supplied: <key>"
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag
from pydantic.json_schema import JsonDict

from toolwire.constraints import schema_checks
from toolwire.request import checks as rules

_NAME: JsonDict = {"pattern": schema_checks.NAME_PATTERN}


def _type_of(v: Any) -> Any:
    return v.get("type") if isinstance(v, dict) else getattr(v, "type", None)


def _pick(pick: Callable[[Any], str | None], what: str) -> Discriminator:
    """`pick` as the discriminator; a value it gives no tag is refused where it stands."""
    return Discriminator(
        pick, custom_error_type="invalid_value", custom_error_message=f"must be {what}"
    )


def _tagged(pick: Callable[[Any], str | None], what: str, *models: type[BaseModel]) -> Any:
    """A union of models tagged with their class names, picked by `pick`: pydantic puts the
    tag into an error's location, and app.py `_param` reads a class name as the alternative
    it tried, not as a parameter."""
    tagged = tuple(Annotated[m, Tag(m.__name__)] for m in models)
    return Annotated[Union[tagged], _pick(pick, what)]  # noqa: UP007 (built at runtime)


class _Model(BaseModel):
    """A settings object: an unknown key is refused (its location names it)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Item(BaseModel):
    """An input item or part: the SDKs replay output items verbatim (Agents SDK
    `model_dump(exclude_unset=True)`), with fields such as annotations, logprobs and status
    that do not change the prompt; unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


# -- content parts -----------------------------------------------------------------------------
class InputText(_Item):
    type: Literal["input_text"]
    text: str


class OutputText(_Item):
    type: Literal["output_text"]
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class RefusalPart(_Item):
    type: Literal["refusal"]
    refusal: str


class OtherPart(_Item):
    """input_image, input_file, input_audio, ...: refused by to_chat, which names the part."""

    model_config = ConfigDict(extra="allow")
    type: str


_PARTS = {"input_text": "InputText", "output_text": "OutputText", "refusal": "RefusalPart"}


def _pick_part(v: Any) -> str | None:
    t = _type_of(v)
    if not isinstance(t, str):
        return None  # pydantic: union_tag_not_found at the part
    return _PARTS.get(t, "OtherPart")


if TYPE_CHECKING:  # what the tagged union holds, for the type checker
    Part = InputText | OutputText | RefusalPart | OtherPart
else:
    Part = _tagged(
        _pick_part, "an object with a type", InputText, OutputText, RefusalPart, OtherPart
    )


def _pick_content(v: Any) -> str | None:
    if isinstance(v, str):
        return "str"
    return "list[item]" if isinstance(v, list) else None


Content = Annotated[
    Union[Annotated[str, Tag("str")], Annotated[list[Part], Tag("list[item]")]],  # noqa: UP007
    _pick(_pick_content, "a string or a list of content parts"),
]


# -- input items -------------------------------------------------------------------------------
class MessageItem(_Item):
    """The easy form (`type` optional, content a string or parts), the strict input form and
    a replayed assistant output message alike."""

    type: Literal["message"] = "message"  # optional on the wire (the easy form)
    role: Literal["user", "assistant", "system", "developer"]
    content: Content
    id: str | None = None
    status: str | None = None
    phase: str | None = None


class FunctionCallItem(_Item):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    namespace: str | None = None
    status: str | None = None
    caller: dict[str, Any] | None = None
    async_: bool | None = Field(default=None, alias="async")


class FunctionCallOutputItem(_Item):
    type: Literal["function_call_output"]
    call_id: str | None = None  # Optional in the SDK's type; to_chat requires it
    output: Content
    id: str | None = None
    name: str | None = None
    namespace: str | None = None
    status: str | None = None
    caller: dict[str, Any] | None = None


class CustomToolCallItem(_Item):
    type: Literal["custom_tool_call"]
    call_id: str
    name: str
    input: str
    id: str | None = None
    namespace: str | None = None
    status: str | None = None
    caller: dict[str, Any] | None = None
    async_: bool | None = Field(default=None, alias="async")


class CustomToolCallOutputItem(_Item):
    type: Literal["custom_tool_call_output"]
    call_id: str
    output: Content
    id: str | None = None
    name: str | None = None
    namespace: str | None = None
    status: str | None = None
    caller: dict[str, Any] | None = None


class ReasoningText(_Item):
    type: str = "reasoning_text"
    text: str


class SummaryText(_Item):
    type: str = "summary_text"
    text: str


class ReasoningItem(_Item):
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[SummaryText] | None = None
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None
    status: str | None = None


class ItemReference(_Item):
    type: Literal["item_reference"] = "item_reference"  # optional on the wire
    id: str


class OtherItem(_Item):
    """Every other item type (computer_call, web_search_call, mcp_call, shell_call, compaction,
    ...): to_chat refuses it, naming `input[i].type`."""

    model_config = ConfigDict(extra="allow")
    type: str


_ITEMS = {
    "message": "MessageItem",
    "function_call": "FunctionCallItem",
    "function_call_output": "FunctionCallOutputItem",
    "custom_tool_call": "CustomToolCallItem",
    "custom_tool_call_output": "CustomToolCallOutputItem",
    "reasoning": "ReasoningItem",
    "item_reference": "ItemReference",
}


def _pick_item(v: Any) -> str | None:
    t = _type_of(v)
    if t is None:
        if isinstance(v, dict):  # the easy message form, or a bare {"id"} item reference
            return "ItemReference" if "role" not in v and "id" in v else "MessageItem"
        return None
    return _ITEMS.get(t, "OtherItem") if isinstance(t, str) else None


if TYPE_CHECKING:
    InputItem = (
        MessageItem
        | FunctionCallItem
        | FunctionCallOutputItem
        | CustomToolCallItem
        | CustomToolCallOutputItem
        | ReasoningItem
        | ItemReference
        | OtherItem
    )
else:
    InputItem = _tagged(
        _pick_item,
        "an object: a message, or an item with a type",
        MessageItem,
        FunctionCallItem,
        FunctionCallOutputItem,
        CustomToolCallItem,
        CustomToolCallOutputItem,
        ReasoningItem,
        ItemReference,
        OtherItem,
    )


def _pick_input(v: Any) -> str | None:
    if isinstance(v, str):
        return "str"
    return "list[item]" if isinstance(v, list) else None


Input = Annotated[
    Union[Annotated[str, Tag("str")], Annotated[list[InputItem], Tag("list[item]")]],  # noqa: UP007
    _pick(_pick_input, "a string or a list of items"),
]


# -- tools -------------------------------------------------------------------------------------
class FunctionTool(_Model):
    type: Literal["function"]
    name: str = Field(json_schema_extra=_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    defer_loading: bool | None = None
    allowed_callers: list[str] | None = None
    output_schema: dict[str, Any] | None = None
    async_: bool | None = Field(default=None, alias="async")


class TextInputFormat(_Model):
    type: Literal["text"]


class GrammarInputFormat(_Model):
    type: Literal["grammar"]
    syntax: str = Field(json_schema_extra={"enum": list(rules.GRAMMAR_SYNTAXES)})
    definition: str


class CustomTool(_Model):
    type: Literal["custom"]
    name: str = Field(json_schema_extra=_NAME)
    description: str | None = None
    format: Annotated[TextInputFormat | GrammarInputFormat, Field(discriminator="type")] | None = (
        None
    )
    defer_loading: bool | None = None
    allowed_callers: list[str] | None = None
    async_: bool | None = Field(default=None, alias="async")


def _pick_inner(v: Any) -> str | None:
    t = _type_of(v)
    return {"function": "FunctionTool", "custom": "CustomTool"}.get(t) if t else None


if TYPE_CHECKING:
    InnerTool = FunctionTool | CustomTool
else:
    InnerTool = _tagged(_pick_inner, "a function or custom tool", FunctionTool, CustomTool)


class NamespaceTool(_Model):
    type: Literal["namespace"]
    name: str
    description: str | None = None
    tools: list[InnerTool]


class OtherTool(BaseModel):
    """A hosted (built-in) tool, or an unknown type: to_chat refuses it or leaves it out."""

    model_config = ConfigDict(extra="allow")
    type: str


_TOOLS = {"function": "FunctionTool", "custom": "CustomTool", "namespace": "NamespaceTool"}


def _pick_tool(v: Any) -> str | None:
    t = _type_of(v)
    return _TOOLS.get(t, "OtherTool") if isinstance(t, str) else None


if TYPE_CHECKING:
    Tool = FunctionTool | CustomTool | NamespaceTool | OtherTool
else:
    Tool = _tagged(
        _pick_tool, "an object with a type", FunctionTool, CustomTool, NamespaceTool, OtherTool
    )


# -- tool_choice -------------------------------------------------------------------------------
class ToolChoiceFunction(_Model):
    type: Literal["function"]
    name: str


class ToolChoiceCustom(_Model):
    type: Literal["custom"]
    name: str


class ToolChoiceAllowed(_Model):
    type: Literal["allowed_tools"]
    mode: str = Field(json_schema_extra={"enum": ["auto", "required"]})
    # {"type": "function" | "custom", "name", "namespace"?} or a hosted entry ({"type":
    # "mcp", "server_label"}, {"type": "image_generation"}): to_chat reads them.
    tools: list[dict[str, Any]]


class ToolChoiceHosted(BaseModel):
    """{"type": "web_search_preview" | "mcp" | "shell" | ...}: a hosted tool, refused."""

    model_config = ConfigDict(extra="allow")
    type: str


_CHOICES = {
    "function": "ToolChoiceFunction",
    "custom": "ToolChoiceCustom",
    "allowed_tools": "ToolChoiceAllowed",
}


def _pick_choice(v: Any) -> str | None:
    if isinstance(v, str):
        return "str"
    t = _type_of(v)
    return _CHOICES.get(t, "ToolChoiceHosted") if isinstance(t, str) else None


ToolChoice = Annotated[
    Union[  # noqa: UP007
        Annotated[Literal["none", "auto", "required"], Tag("str")],
        Annotated[ToolChoiceFunction, Tag("ToolChoiceFunction")],
        Annotated[ToolChoiceCustom, Tag("ToolChoiceCustom")],
        Annotated[ToolChoiceAllowed, Tag("ToolChoiceAllowed")],
        Annotated[ToolChoiceHosted, Tag("ToolChoiceHosted")],
    ],
    _pick(_pick_choice, "none, auto, required, or an object with a type"),
]


# -- text, reasoning, stream_options --------------------------------------------------------
class TextFormatText(_Model):
    type: Literal["text"]


class TextFormatJSONObject(_Model):
    type: Literal["json_object"]


class TextFormatJSONSchema(_Model):
    type: Literal["json_schema"]
    name: str = Field(json_schema_extra=_NAME)
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


class OtherFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str


_FORMATS = {
    "text": "TextFormatText",
    "json_object": "TextFormatJSONObject",
    "json_schema": "TextFormatJSONSchema",
}


def _pick_format(v: Any) -> str | None:
    t = _type_of(v)
    return _FORMATS.get(t, "OtherFormat") if isinstance(t, str) else None


if TYPE_CHECKING:
    TextFormat = TextFormatText | TextFormatJSONObject | TextFormatJSONSchema | OtherFormat
else:
    TextFormat = _tagged(
        _pick_format,
        "an object with a type",
        TextFormatText,
        TextFormatJSONObject,
        TextFormatJSONSchema,
        OtherFormat,
    )


class TextConfig(_Model):
    format: TextFormat | None = None
    verbosity: str | None = Field(
        default=None, json_schema_extra={"enum": ["low", "medium", "high"]}
    )


class ReasoningConfig(_Model):
    effort: str | None = Field(
        default=None, json_schema_extra={"enum": list(rules.REASONING_EFFORTS)}
    )
    summary: str | None = None
    generate_summary: str | None = None
    context: str | None = None
    mode: str | None = None


class StreamOptions(_Model):
    include_obfuscation: bool | None = None


# -- the body ----------------------------------------------------------------------------------
class ResponseCreateRequest(BaseModel):
    # extra="allow": an unknown key is refused by to_chat.check_request with OpenAI's own
    # message ("Unrecognized request argument supplied"), as the chat model does.
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    model: str
    input: Input
    instructions: str | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    # Above 0: what a uint32 holds; 0 itself is the check's to refuse (as chat's max_tokens).
    max_output_tokens: int | None = Field(
        default=None, ge=0, le=2**31 - 1, json_schema_extra={"minimum": 1}
    )
    max_tool_calls: int | None = None
    temperature: float | None = Field(
        default=None,
        json_schema_extra={"minimum": rules.TEMPERATURE[0], "maximum": rules.TEMPERATURE[1]},
    )
    top_p: float | None = Field(
        default=None,
        json_schema_extra={"exclusiveMinimum": rules.TOP_P[0], "maximum": rules.TOP_P[1]},
    )
    text: TextConfig | None = None
    verbosity: str | None = None  # the SDK's responses.parse() sends it top level
    reasoning: ReasoningConfig | None = None
    truncation: str | None = Field(default=None, json_schema_extra={"enum": ["disabled"]})
    metadata: dict[str, str] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    service_tier: str | None = None
    include: list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    client_metadata: dict[str, Any] | None = None
    image: dict[str, Any] | None = None
    access_programs: dict[str, Any] | None = None
    # Refused when set (to_chat.check_request): shape only here.
    background: bool | None = None
    background_options: dict[str, Any] | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    context_management: list[Any] | None = None
    moderation: dict[str, Any] | None = None
    top_logprobs: int | None = None
