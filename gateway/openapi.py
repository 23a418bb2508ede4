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


def openapi_document(limits: Limits) -> dict[str, Any]:
    request = ChatCompletionRequest.model_json_schema(ref_template=REF, by_alias=True)
    schemas = request.pop("$defs", {})
    _served_request(request, schemas, limits)
    schemas["ChatCompletionRequest"] = request
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
            "description": "OpenAI-compatible chat completions with function calling.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
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
