"""The OpenAPI document of the REST surface, served at /openapi.json.

Generated, never written by hand: the request schema is the pydantic model the gateway
validates with, so the document cannot drift from what is accepted; the response schemas come
from response_types.py, the definitions wire.py's builders are typed against.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from toolwire import __version__
from toolwire.request.limits import Limits

from .openai_models import ChatCompletionRequest
from .response_types import DOCUMENTED
from .responses.request import ResponseCreateRequest

REF = "#/components/schemas/{model}"

# The request model accepts these parameters only to refuse other values with a clear message;
# the document states the values that are served.
SERVED = {
    "n": {"enum": [1, None]},
    "logprobs": {"enum": [False, None]},
    "top_logprobs": {"type": "null"},
    "presence_penalty": {"enum": [0, None]},
    "frequency_penalty": {"enum": [0, None]},
    "store": {"enum": [False, None]},
    "logit_bias": {"anyOf": [{"type": "object", "maxProperties": 0}, {"type": "null"}]},
}


def _served_request(request: dict, schemas: dict, limits: Limits) -> None:
    props = request["properties"]
    props.update(SERVED)
    request["additionalProperties"] = False
    props["messages"]["maxItems"] = limits.max_messages
    props["tools"]["anyOf"][0]["maxItems"] = limits.max_tools
    props["stop"]["anyOf"][1]["maxItems"] = limits.max_stop
    schemas["ContentPart"] = {
        "type": "object",
        "required": ["type", "text"],
        "properties": {"type": {"enum": ["text", "refusal"]}, "text": {"type": "string"}},
    }
    # A tool result must say which call it answers.
    schemas["Message"]["if"] = {"properties": {"role": {"const": "tool"}}}
    schemas["Message"]["then"] = {
        "required": ["tool_call_id"],
        "properties": {"tool_call_id": {"type": "string", "minLength": 1}},
    }


def _errors(*statuses: int) -> dict[str, Any]:
    what = {
        400: "Invalid request; `param` names the parameter",
        401: "Missing or wrong API key",
        404: "Unknown model or path",
        413: "Request body over the limit",
        429: "Overloaded: retry after `Retry-After` seconds",
        503: "A service is down: retry after `Retry-After` seconds",
    }
    return {
        str(s): {
            "description": what[s],
            "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}},
        }
        for s in statuses
    }


def _responses_paths(schemas: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """The Responses API's routes. Its request's parts are named `Responses*` (a `FunctionTool`
    here is flat, unlike Chat's); the Response object is described, not schema'd: its shape is
    openai-python's `types/responses/response.py`."""
    request = ResponseCreateRequest.model_json_schema(
        ref_template=REF.format(model="Responses{model}"), by_alias=True
    )
    for name, definition in request.pop("$defs", {}).items():
        schemas[f"Responses{name}"] = definition
    schemas["ResponseCreateRequest"] = request
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    response_id = {
        "name": "response_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    stored = {
        "description": "A stored Response object",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    return {
        "/v1/responses": {
            "post": {
                "operationId": "createResponse",
                "security": bearer,
                "requestBody": {
                    "required": True,
                    "description": f"At most {limits.max_body_bytes} bytes",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": REF.format(model="ResponseCreateRequest")}
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "A Response object, or with `stream: true` server-sent "
                        "events of the Responses stream (response.created ... response.completed)",
                        "content": {
                            "application/json": {"schema": {"type": "object"}},
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    **_errors(400, 401, 404, 413, 429, 503),
                },
            }
        },
        "/v1/responses/{response_id}": {
            "get": {
                "operationId": "retrieveResponse",
                "security": bearer,
                "parameters": [response_id],
                "responses": {"200": stored, **_errors(401, 404, 503)},
            },
            "delete": {
                "operationId": "deleteResponse",
                "security": bearer,
                "parameters": [response_id],
                "responses": {
                    "200": {"description": "{id, object: response.deleted, deleted: true}"},
                    **_errors(401, 404, 503),
                },
            },
        },
        "/v1/responses/{response_id}/input_items": {
            "get": {
                "operationId": "listInputItems",
                "security": bearer,
                "parameters": [
                    response_id,
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100},
                    },
                    {"name": "order", "in": "query", "schema": {"enum": ["asc", "desc"]}},
                ],
                "responses": {
                    "200": {"description": "A list of this response's input items (paginated)"},
                    **_errors(400, 401, 404, 503),
                },
            }
        },
    }


def openapi_document(limits: Limits) -> dict[str, Any]:
    request = ChatCompletionRequest.model_json_schema(ref_template=REF, by_alias=True)
    schemas = request.pop("$defs", {})
    _served_request(request, schemas, limits)
    schemas["ChatCompletionRequest"] = request
    responses_paths = _responses_paths(schemas, limits)
    for name, shape in DOCUMENTED.items():
        schema = TypeAdapter(shape).json_schema(ref_template=REF)
        for inner, definition in schema.pop("$defs", {}).items():
            if schemas.setdefault(inner, definition) != definition:
                raise AssertionError(f"two response shapes named {inner}")
        schemas[name] = schema
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "toolwire",
            "version": __version__,
            "description": "OpenAI-compatible chat completions and responses with function "
            "calling.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            **responses_paths,
            "/v1/chat/completions": {
                "post": {
                    "operationId": "createChatCompletion",
                    "security": bearer,
                    "requestBody": {
                        "required": True,
                        "description": f"At most {limits.max_body_bytes} bytes",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": REF.format(model="ChatCompletionRequest")}
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "A completion, or with `stream: true` server-sent "
                            "events of chat.completion.chunk objects",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": REF.format(model="ChatCompletion")}
                                },
                                "text/event-stream": {"schema": {"type": "string"}},
                            },
                        },
                        **_errors(400, 401, 404, 413, 429, 503),
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "operationId": "listModels",
                    "security": bearer,
                    "responses": {
                        "200": {
                            "description": "The served model and its aliases",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": REF.format(model="ModelList")}
                                }
                            },
                        },
                        **_errors(401),
                    },
                }
            },
            "/v1/models/{model}": {
                "get": {
                    "operationId": "retrieveModel",
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "model",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "One model",
                            "content": {
                                "application/json": {"schema": {"$ref": REF.format(model="Model")}}
                            },
                        },
                        **_errors(401, 404),
                    },
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "responses": {
                        "200": {"description": "Every service is serving"},
                        "503": {"description": "`services` says which one is down"},
                    },
                }
            },
        },
    }
