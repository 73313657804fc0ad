"""README.md stays true to the code: settings, file map, client flags and engine settings it names."""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
CLIENT_ONLY = {"SJC_SERVER", "SJC_API_KEY", "SJC_VENV", "SJC_TORCH_INDEX_URL", "SJC_DEMO_KEEP"}
# engine environment variables and the file that reads each
ENGINE_ENV = {
    "SJC_NATIVE": "sjc_engine/native/build.py",
    "SJC_NATIVE_CACHE": "sjc_engine/native/build.py",
    "SJC_THREADS": "sjc_engine/threads.py",
}
GPU_CHECK_ENV = {"SJC_GPU_CHECK_DEVICE", "SJC_GPU_CHECK_OUT", "SJC_GPU_CHECK_WORK"}  # read by bench/gpu_check.sh


def section(title: str) -> str:
    start = README.index(f"## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def test_every_service_setting_is_documented_and_nothing_else():
    from sjc_service.settings import Settings

    fields = {f"SJC_{name.upper()}" for name in Settings.model_fields}
    table = section("Settings").split("### Engine")[0]
    documented = set(re.findall(r"^\| `(SJC_[A-Z0-9_]+)` \|", table, flags=re.M))
    assert documented == fields, f"missing: {sorted(fields - documented)}, unknown: {sorted(documented - fields)}"
    mentioned = set(re.findall(r"\bSJC_[A-Z0-9_]+\b", README))
    known = fields | CLIENT_ONLY | set(ENGINE_ENV) | GPU_CHECK_ENV
    assert mentioned <= known, f"README names unknown variables: {sorted(mentioned - known)}"


def test_engine_settings_named_in_the_readme_exist():
    from sjc_engine.config import SJCConfig

    names = {f.name for f in dataclasses.fields(SJCConfig)}
    table = section("Settings").split("### Engine")[1]
    rows = re.findall(r"^\| `([a-z_]+)`(?:, `([a-z_]+)`)? \|", table, flags=re.M)
    documented = {n for row in rows for n in row if n}
    assert documented and documented <= names, sorted(documented - names)


def test_repository_map_paths_exist():
    block = section("Repository map").split("```")[1]
    missing, parent, seen = [], "", 0
    for line in block.splitlines():
        if not line.strip():
            continue
        indented = line.startswith(" ")
        for word in line.split():
            if not re.fullmatch(r"[\w.-]+(/[\w.-]*)*", word) or not ("/" in word or "." in word):
                break  # the description starts
            path = parent + word if indented else word
            seen += 1
            if not (ROOT / path).exists():
                missing.append(path)
        if not indented:
            parent = line.split()[0] if line.split()[0].endswith("/") else ""
    assert seen > 20 and not missing, f"README's map names paths that do not exist: {missing}"


def test_client_flags_in_the_readme_exist():
    from sjc_client.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags = set(sub.choices["submit"]._option_string_actions)
    text = section("Python client and `sjc submit`")
    named = set(re.findall(r"`(--[a-z-]+)", text))
    assert named and named <= flags, sorted(named - flags)
    line = next(x for x in text.splitlines() if x.startswith("python -m sjc_client status"))
    commands = ["status"] + [part.split()[0] for part in line.split("also:")[1].split(",")]
    assert set(commands) <= set(sub.choices), commands


def test_engine_cli_flags_in_the_readme_exist():
    from sjc_engine.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags = set(sub.choices["generate"]._option_string_actions)
    named = set(re.findall(r"`(--[a-z-]+)`", section("Settings").split("### Engine")[1]))
    named |= set(re.findall(r"sjc generate [^\n`]*", README) and
                 re.findall(r"(--[a-z-]+)", " ".join(re.findall(r"sjc generate [^\n`]*", README))))
    assert named and named <= flags, sorted(named - flags)


def test_engine_environment_variables_named_in_the_readme_are_read_by_the_engine():
    for name, reader in ENGINE_ENV.items():
        assert name in README and f'"{name}"' in (ROOT / reader).read_text(), name
    gpu_check = (ROOT / "bench" / "gpu_check.sh").read_text()
    for name in GPU_CHECK_ENV:
        assert name in gpu_check, name
