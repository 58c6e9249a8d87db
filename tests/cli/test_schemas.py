"""The published contract (schemas/, README examples) and the code's models agree."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from worker.cli import schemas as contracts
from worker.domain.decoder import Rejected, decode
from worker.domain.wire import InputStream, RegenRequestEvent
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
STREAMS = {
    "comment-event": InputStream.COMMENTS,
    "request-event": InputStream.REQUESTS,
    "generated-event": InputStream.GENERATED,
}
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((ROOT / "schemas" / f"{name}.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def model_accepts(name: str, doc: Any) -> bool:
    raw = json.dumps(doc).encode()
    if name == "regen-request":
        try:
            RegenRequestEvent.model_validate_json(raw)
            return True
        except ValueError:
            return False
    try:
        decode(STREAMS[name], raw, NOW)
        return True
    except Rejected:
        return False


@pytest.mark.parametrize("name", list(contracts.MESSAGES))
def test_committed_schema_is_what_the_model_generates(name: str) -> None:
    committed = (ROOT / "schemas" / f"{name}.json").read_text()
    assert committed == contracts.render(name), "run `make schemas` and commit the result"


def readme_examples() -> list[tuple[str, Any]]:
    text = (ROOT / "README.md").read_text()
    found = re.findall(r"<!-- example: ([\w-]+) -->\s*```json\n(.*?)```", text, re.S)
    return [(name, json.loads(body)) for name, body in found]


def test_readme_has_an_example_of_every_message() -> None:
    assert {name for name, _ in readme_examples()} == set(contracts.MESSAGES)


@pytest.mark.parametrize(("name", "doc"), readme_examples())
def test_readme_examples_validate_against_schema_and_model(name: str, doc: Any) -> None:
    validator(name).validate(doc)
    assert model_accepts(name, doc)


COMMENT = {
    "event_id": "e",
    "type": "comment.created",
    "comment_id": "c",
    "request_id": "r",
    "user_id": 1,
    "occurred_at": "2026-01-01T00:00:00Z",
}
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("ok", {}),
    ("integer ids", {"comment_id": 12, "request_id": 7}),
    ("no user", {"user_id": None}),
    ("unknown extra field", {"extra": {"x": 1}}),
    ("offset zone", {"occurred_at": "2026-01-01T01:00:00+01:00"}),
    ("unknown type", {"type": "comment.liked"}),
    ("naive timestamp", {"occurred_at": "2026-01-01T00:00:00"}),
    ("epoch number timestamp", {"occurred_at": 1767225600}),
    ("zero user", {"user_id": 0}),
    ("negative user", {"user_id": -3}),
    ("huge user", {"user_id": 2**63}),
    ("string user", {"user_id": "1"}),
    ("boolean user", {"user_id": True}),
    ("empty id", {"event_id": ""}),
    ("id with space", {"event_id": "a b"}),
    ("negative id", {"comment_id": -1}),
    ("long id", {"event_id": "x" * 201}),
    ("missing id", {"event_id": None}),
]


@pytest.mark.parametrize(("label", "change"), VARIANTS, ids=[v[0] for v in VARIANTS])
def test_schema_and_model_agree_on_comment_variants(label: str, change: dict[str, Any]) -> None:
    doc = {**COMMENT, **change}
    doc = {k: v for k, v in doc.items() if not (v is None and k == "event_id")}
    assert validator("comment-event").is_valid(doc) == model_accepts("comment-event", doc), label


# WB_TOPIC_REGEN_REQUESTS_BATCH has no default (unset: the one request topic); the
# document names the batch lane's channel by this example.
BATCH_TOPIC_EXAMPLE = "profile.highlights.regen-requests.batch"


def test_asyncapi_document_matches_settings_and_schemas() -> None:
    doc = yaml.safe_load((ROOT / "schemas" / "asyncapi.yaml").read_text())
    assert doc["asyncapi"].startswith("3.")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    addresses = {c["address"] for c in doc["channels"].values()}
    inputs = {settings.topic_comments, settings.topic_requests, settings.topic_generated}
    requests = {settings.topic_regen_requests, BATCH_TOPIC_EXAMPLE}
    assert addresses == inputs | requests | {f"{t}.dlq" for t in inputs}
    for op in doc["operations"].values():
        channel = op["channel"]["$ref"].split("/")[-1]
        assert channel in doc["channels"]
    for message in doc["components"]["messages"].values():
        ref = message["payload"].get("schema", {}).get("$ref")
        if ref:
            assert (ROOT / "schemas" / ref).is_file(), ref
