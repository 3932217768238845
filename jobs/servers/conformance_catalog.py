"""The static half of the conformance fixture: payloads, schemas, resources, prompts.

Everything here is data the MCP conformance suite (``@modelcontextprotocol/conformance``
0.1.16, server scenarios) reads back and checks field by field: the fixed texts,
the 1x1 PNG and the tiny WAV, the elicitation schemas of SEP-1034 (defaults) and
SEP-1330 (enum variants), and the resources and prompts it reads or gets by name.
The tools, which need a request context, live in ``conformance.py``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.prompts.base import UserMessage
from mcp.types import Completion, EmbeddedResource, ImageContent, TextContent, TextResourceContents

__all__ = [
    "TEST_IMAGE_BASE64",
    "TEST_AUDIO_BASE64",
    "WATCHED_RESOURCE_URI",
    "USER_INFO_SCHEMA",
    "SEP1034_DEFAULTS_SCHEMA",
    "SEP1330_ENUMS_SCHEMA",
    "COMPLETION_CANDIDATES",
    "register_resources",
    "register_prompts",
    "complete",
]

# A 1x1 red PNG and a 44-byte RIFF/WAVE header with two samples: the smallest
# payloads the image/audio checks accept (they only look for data + mimeType).
TEST_IMAGE_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
TEST_AUDIO_BASE64 = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="

WATCHED_RESOURCE_URI = "test://watched-resource"

# tools-call-elicitation answers {username, email}; asking for exactly those keeps
# the round trip honest instead of relying on the client to fill an unrelated form.
USER_INFO_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "username": {"type": "string", "description": "User's response"},
        "email": {"type": "string", "description": "User's email address"},
    },
    "required": ["username", "email"],
}

# SEP-1034: every primitive kind carries a default; the suite compares each value.
SEP1034_DEFAULTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
}

# SEP-1330: the five enum shapes, written out literally because the suite checks
# which keyword each one uses (enum vs oneOf vs enumNames vs items.anyOf).
SEP1330_ENUMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "untitledSingle": {
            "type": "string",
            "description": "Untitled single-select",
            "enum": ["option1", "option2", "option3"],
        },
        "titledSingle": {
            "type": "string",
            "description": "Titled single-select",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "description": "Legacy titled enum (deprecated enumNames)",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "description": "Untitled multi-select",
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "description": "Titled multi-select",
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
}

# completion/complete answers with the candidates that start with the typed prefix,
# so a relay can be checked for passing the argument value through unchanged.
COMPLETION_CANDIDATES = ("paris", "park", "party", "test-value", "testing")


def complete(value: str) -> Completion:
    """The completion for a partial argument value (prefix match over a fixed list)."""
    values = [c for c in COMPLETION_CANDIDATES if c.startswith(value)]
    return Completion(values=values, total=len(values), has_more=False)


def register_resources(server: MCPServer) -> None:
    """Add the static resources, the template and the subscribable resource."""

    @server.resource("test://static-text", mime_type="text/plain")
    def static_text() -> str:
        """A static text resource for testing"""
        return "This is the content of the static text resource."

    @server.resource("test://static-binary", mime_type="image/png")
    def static_binary() -> bytes:
        """A static binary resource (a 1x1 PNG) for testing"""
        return base64.b64decode(TEST_IMAGE_BASE64)

    @server.resource("test://template/{id}/data", mime_type="application/json")
    def template_data(id: str) -> str:  # noqa: A002 - the URI template names it `id`
        """A resource template with parameter substitution"""
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    @server.resource(WATCHED_RESOURCE_URI, mime_type="text/plain")
    def watched() -> str:
        """A resource that can be subscribed to for updates"""
        return "Watched resource content"


def register_prompts(server: MCPServer) -> None:
    """Add the four prompts the prompts-* scenarios get."""

    @server.prompt()
    def test_simple_prompt() -> list[UserMessage]:
        """A simple prompt without arguments"""
        return [UserMessage(content=TextContent(type="text", text="This is a simple prompt for testing."))]

    @server.prompt()
    def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
        """A prompt with two required arguments"""
        text = f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'"
        return [UserMessage(content=TextContent(type="text", text=text))]

    @server.prompt()
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:  # noqa: N803 - wire name
        """A prompt that embeds a resource"""
        resource = TextResourceContents(
            uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
        )
        return [
            UserMessage(content=EmbeddedResource(type="resource", resource=resource)),
            UserMessage(content=TextContent(type="text", text="Please process the embedded resource above.")),
        ]

    @server.prompt()
    def test_prompt_with_image() -> list[UserMessage]:
        """A prompt that includes image content"""
        return [
            UserMessage(content=ImageContent(type="image", data=TEST_IMAGE_BASE64, mime_type="image/png")),
            UserMessage(content=TextContent(type="text", text="Please analyze the image above.")),
        ]
