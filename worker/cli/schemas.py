"""The published topic contracts: JSON Schemas generated from the event models.

``python -m worker.cli.schemas`` (``make schemas``) rewrites ``schemas/*.json``; a test fails
when the committed files and the models drift apart.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from worker.domain.wire import CommentEvent, GeneratedEvent, RegenRequestEvent, RequestEvent

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
MESSAGES: dict[str, type[BaseModel]] = {
    "comment-event": CommentEvent,
    "request-event": RequestEvent,
    "generated-event": GeneratedEvent,
    "regen-request": RegenRequestEvent,
}


def json_schema(name: str) -> dict[str, Any]:
    model = MESSAGES[name]
    schema = model.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{name}.json",
        **schema,
    }


def render(name: str) -> str:
    return json.dumps(json_schema(name), indent=2, sort_keys=True) + "\n"


def write_all(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(exist_ok=True)
    written = []
    for name in MESSAGES:
        path = directory / f"{name}.json"
        path.write_text(render(name), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(path)
