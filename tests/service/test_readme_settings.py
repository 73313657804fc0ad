"""The README's settings tables hold the code's defaults, by value: ``SJC_*`` against :class:`Settings`,
the engine table (and its paragraph of Python-only settings) against :class:`SJCConfig`."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from sjc_engine.config import SJCConfig
from sjc_service.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
# cells that describe a default instead of stating it (checked by hand: keep this list short)
DESCRIBED = {"SJC_S3_PUBLIC_URL", "SJC_SIGNING_SECRET", "sigma_min", "sigma_max"}


def table_rows(first_header: str) -> dict[str, str]:
    """``{name: default cell}`` of the README table whose first header cell is ``first_header``."""
    lines = README.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"| {first_header} | default |"))
    rows: dict[str, str] = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        for name in re.findall(r"`([A-Za-z0-9_]+)`", cells[0]):
            rows[name] = cells[1]
    return rows


def parse(cell: str) -> object:
    """A default as the README writes it: ``4``, ``1e4``, ``0.05``, ``true``, `` `auto` ``, none, empty."""
    text = cell.strip("`").strip()
    if text.startswith("none"):
        return None
    if text == "empty":
        return "empty"
    if text in ("true", "false"):
        return text == "true"
    try:
        return float(text)
    except ValueError:
        return text


def same(documented: object, actual: object) -> bool:
    if documented == "empty":
        return actual in ("", [], ())
    if isinstance(documented, float) and not isinstance(actual, bool) and isinstance(actual, (int, float)):
        return documented == pytest.approx(float(actual))
    return documented == actual


def test_service_settings_table_matches_settings_defaults():
    rows = table_rows("variable")
    fields = Settings.model_fields
    documented = {name.removeprefix("SJC_").lower() for name in rows}
    assert documented == set(fields), f"undocumented: {set(fields) - documented}; unknown: {documented - set(fields)}"
    for name, cell in rows.items():
        if name in DESCRIBED:
            continue
        default = fields[name.removeprefix("SJC_").lower()].default
        default = default.get_secret_value() if hasattr(default, "get_secret_value") else default
        assert same(parse(cell), default), f"README says {name} = {cell}; the code says {default!r}"


def test_engine_settings_table_matches_sjcconfig_defaults():
    rows = table_rows("setting")
    defaults = {f.name: f.default for f in dataclasses.fields(SJCConfig)}
    assert set(rows) <= set(defaults), f"not SJCConfig settings: {set(rows) - set(defaults)}"
    for name, cell in rows.items():
        if name not in DESCRIBED:
            assert same(parse(cell), defaults[name]), f"README says {name} = {cell}; SJCConfig says {defaults[name]!r}"
    # the paragraph after the table: "`name` value" pairs of the settings only Python sets
    text = README.read_text()
    paragraph = text[text.index("Also in `SJCConfig`"):].split("\n\n")[0]
    pairs = re.findall(r"`(\w+)` (\([^)]*\)|[-\w.]+?)(?=[,.]? |[,.]?$)", paragraph.replace("\n", " "))
    checked = 0
    for name, value in pairs:
        if name not in defaults or name in rows:
            continue
        actual = defaults[name]
        if value.startswith("("):
            numbers = tuple(float(v) for v in value.strip("()").split(","))
            assert numbers == pytest.approx(tuple(float(v) for v in actual)), f"README says {name} = {value}"
        else:
            assert same(parse(value), actual), f"README says {name} = {value}; SJCConfig says {actual!r}"
        checked += 1
    assert checked >= 10, pairs


def test_every_request_setting_is_in_the_engine_table():
    from sjc_service.schemas import JobCreate

    rows = table_rows("setting")
    settings = {f.name for f in dataclasses.fields(SJCConfig)}
    request = {name for name in JobCreate.model_fields if name in settings} - {"prompt", "model"}
    assert request <= set(rows), f"job fields missing from the README's engine table: {request - set(rows)}"
