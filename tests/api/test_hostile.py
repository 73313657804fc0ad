"""What a hostile client sends: out-of-range event ids, odd characters, loose types, undecodable bodies.

Each is refused before anything is stored or streamed, with a problem+json naming the field; the
OpenAPI document declares what the server checks.
"""

from __future__ import annotations

import json

import pytest

from tests.api.conftest import auth
from tests.api.test_create import PROBLEM, assert_nothing_left
from tests.api.test_events import parse_sse, run_job

TOO_BIG = str(2**64)


@pytest.mark.parametrize("event_id", [f"{TOO_BIG}-0", f"1-{TOO_BIG}", f"{TOO_BIG}-{TOO_BIG}"])
def test_event_id_past_64_bits_is_422_before_the_stream(client, services, event_id):
    job_id = client.post("/v1/jobs", json={"prompt": "a red cube"}, headers=auth()).json()["id"]
    r = client.get(f"/v1/jobs/{job_id}/events", headers={**auth(), "Last-Event-ID": event_id})
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
    assert r.json()["errors"][0]["field"] == "Last-Event-ID" and "2**64" in r.json()["detail"]
    r = client.get(f"/v1/jobs/{job_id}/events", params={"last_event_id": event_id}, headers=auth())
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM


def test_largest_event_id_is_accepted(client, services):
    job_id = client.post("/v1/jobs", json={"prompt": "a red cube"}, headers=auth()).json()["id"]
    run_job(services, job_id)
    top = f"{2**64 - 1}-{2**64 - 1}"
    r = client.get(f"/v1/jobs/{job_id}/events", headers={**auth(), "Last-Event-ID": top})
    assert r.status_code == 200
    events, _ = parse_sse(r.text)
    assert [e["event"] for e in events] == ["done"] and events[0]["data"]["status"] == "succeeded"


ODD_PROMPTS = {
    "nul": "a red\x00 cube",
    "emoji": "a red cube \U0001F600",
    "rtl-override": "a red \u202ecube",
    "zero-width-space": "a red\u200b cube",
    "lone-surrogate": "a red cube \ud800",
    "bell": "a red cube\x07",
}


@pytest.mark.parametrize("name", list(ODD_PROMPTS))
def test_prompts_with_control_format_or_emoji_characters_are_refused(client, services, name):
    body = json.dumps({"prompt": ODD_PROMPTS[name]})  # ASCII with \u escapes: even a lone surrogate goes
    r = client.post("/v1/jobs", content=body, headers={**auth(), "content-type": "application/json"})
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
    errors = r.json()["errors"]
    assert [e["field"] for e in errors] == ["prompt"]
    assert ("unicode" if name == "lone-surrogate" else "U+") in errors[0]["message"]  # pydantic refuses surrogates
    assert_nothing_left(services)


def test_accented_letters_and_punctuation_are_fine(client):
    r = client.post("/v1/jobs", json={"prompt": "a cow, très rouge! (50% off)", "model": "wide"}, headers=auth())
    assert r.status_code == 202, r.text
    assert r.json()["params"]["prompt"] == "a cow, très rouge! (50% off)"


@pytest.mark.parametrize("body,field", [
    ({"prompt": "a red cube", "steps": True}, "steps"),
    ({"prompt": "a red cube", "steps": "5"}, "steps"),
    ({"prompt": "a red cube", "steps": 5.0}, "steps"),
    ({"prompt": "a red cube", "seed": False}, "seed"),
    ({"prompt": "a red cube", "guidance_scale": "10"}, "guidance_scale"),
    ({"prompt": 5}, "prompt"),
])
def test_types_are_strict(client, services, body, field):
    r = client.post("/v1/jobs", json=body, headers=auth())
    assert r.status_code == 422, r.text
    assert field in [e["field"] for e in r.json()["errors"]]
    assert_nothing_left(services)


def test_an_int_is_a_fine_float(client):
    r = client.post("/v1/jobs", json={"prompt": "a red cube", "guidance_scale": 7}, headers=auth())
    assert r.status_code == 202 and r.json()["params"]["guidance_scale"] == 7.0


@pytest.mark.parametrize("key", ["caf\xe9-1234", "two words", "tab\there", "x" * 201])
def test_idempotency_key_must_be_printable_ascii(client, services, key):
    headers = {**auth(), "Idempotency-Key": key.encode("latin-1")}  # sent as raw Latin-1 bytes
    r = client.post("/v1/jobs", json={"prompt": "a red cube"}, headers=headers)
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM, r.text
    assert r.json()["errors"][0]["field"].lower() == "idempotency-key"
    assert list(services.redis.scan_iter("sjc:idem:*")) == []
    assert_nothing_left(services)


def test_non_utf8_body_is_a_400_problem_with_errors(client, services):
    body = '{"prompt": "a red cube \xe9"}'.encode("latin-1")
    r = client.post("/v1/jobs", content=body, headers={**auth(), "content-type": "application/json"})
    assert r.status_code == 400 and r.headers["content-type"] == PROBLEM, r.text
    problem = r.json()
    assert problem["type"].endswith("malformed-body") and problem["errors"][0]["field"] == "body"
    assert "UTF-8" in problem["detail"]
    assert_nothing_left(services)


def test_garbage_cursor_is_refused_by_its_declared_pattern(client):
    r = client.get("/v1/jobs", params={"cursor": "not a cursor!"}, headers=auth())
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "cursor"


def test_openapi_declares_problems_and_patterns(client):
    spec = client.get("/openapi.json").json()
    create = spec["paths"]["/v1/jobs"]["post"]
    assert "400" in create["responses"] and "422" in create["responses"]
    assert "404" in spec["paths"]["/v1/files/{key}"]["get"]["responses"]
    for path, item in spec["paths"].items():
        for method, op in item.items():
            for status, response in op.get("responses", {}).items():
                if status.startswith(("4", "5")):
                    assert list(response["content"]) == ["application/problem+json"], (path, method, status)
    params = {p["name"]: p for p in spec["paths"]["/v1/jobs/{job_id}/events"]["get"]["parameters"]}
    assert pattern_of(params["last_event_id"]).startswith("^(0|")
    assert pattern_of(params["last-event-id"]).startswith("^(0|")
    listing = {p["name"]: p for p in spec["paths"]["/v1/jobs"]["get"]["parameters"]}
    assert pattern_of(listing["cursor"]) == "^[A-Za-z0-9_-]+$"
    headers = {p["name"]: p for p in create["parameters"]}
    assert pattern_of(headers["idempotency-key"]) == "^[!-~]{1,200}$"


def pattern_of(parameter: dict) -> str:
    """The ``pattern`` of an optional parameter's schema (beside or inside its ``anyOf``)."""
    schema = parameter["schema"]
    found = [schema.get("pattern")] + [s.get("pattern") for s in schema.get("anyOf", [])]
    return next(p for p in found if p)
