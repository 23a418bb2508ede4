"""Tool definitions the tests share (OpenAI's guide examples and edge cases)."""

from toolwire.stack.demo import TOOLS

WEATHER = TOOLS[0]  # the guide's get_weather, as the demo runs it

UNITS = {
    "type": "function",
    "function": {
        "name": "get_temperature",
        "description": "Temperature in a city in the given unit.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}

NO_PARAMS = {
    "type": "function",
    "function": {"name": "get_time", "description": "The current time."},
}

SEND_EMAIL = {
    "type": "function",
    "function": {
        "name": "send_email",
        "description": "Send an email to a given recipient with a subject and message.",
        "parameters": {
            "type": "object",
            "properties": {
                "to": {"type": "string", "description": "The recipient email address."},
                "subject": {"type": "string"},
                "body": {"type": "string"},
            },
            "required": ["to", "subject", "body"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
