"""toolwire: OpenAI-style function calling for open-weight models, as gRPC services."""

__version__ = "0.1.0"
