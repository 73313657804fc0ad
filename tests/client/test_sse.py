"""The SSE parser against the text/event-stream rules (no network)."""

from sjc_client.sse import SSEParser, parse_sse


def test_multiline_data_comments_ids_and_types():
    lines = [
        ": heartbeat",
        "retry: 2500",
        "id: 1-0",
        "event: progress",
        'data: {"step": 1,',
        'data:  "total": 10}',
        "",
        ":ping",
        "",  # a blank line after a comment dispatches nothing
        "data: hello",
        "data:world",
        "",
        "id: 3-0",
        "",  # an id with no data dispatches nothing but moves the last id
        "event: done",
        'data: {"status": "succeeded"}',
        "",
        "data: never dispatched (no blank line before the end)",
    ]
    parser = SSEParser()
    events = list(parse_sse(lines, parser))
    assert [(e.id, e.event) for e in events] == [("1-0", "progress"), ("1-0", "message"), ("3-0", "done")]
    assert events[0].data == {"step": 1, "total": 10}  # two data lines joined with "\n", then JSON
    assert events[1].data == "hello\nworld"  # not JSON: the raw text; "data:world" has no space to strip
    assert events[2].data == {"status": "succeeded"}
    assert parser.retry_ms == 2500
    assert parser.last_event_id == "3-0"


def test_event_tuple_unpacks_and_crlf_lines():
    (event_id, name, data), = parse_sse(["id: 7\r", "event: state\r", 'data: {"a": 1}\r', "\r"])
    assert (event_id, name, data) == ("7", "state", {"a": 1})


def test_field_without_colon_and_unknown_fields_are_ignored():
    events = list(parse_sse(["data", "foo: bar", "", "data: x", ""]))
    # "data" alone is a data field with an empty value: it dispatches "" (the spec's behaviour).
    assert [e.data for e in events] == ["", "x"]


def test_id_of_an_unfinished_event_does_not_count():
    parser = SSEParser(last_event_id="2-0")
    assert list(parse_sse(["id: 3-0", 'data: {"half'], parser)) == []
    assert parser.last_event_id == "2-0"  # a reconnect must resume after 2-0, not skip 3-0
