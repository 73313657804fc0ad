"""Install, offline, the packages the GPU machine lacks from the wheels bench/gpu/fetch_wheels.sh downloaded.

Only modules that do not import already are installed, each from its own wheel without dependencies, into a
separate folder (``--target``) that goes first on ``PYTHONPATH``: the machine's own packages (its CUDA torch
above all) are never replaced or shadowed. diffusers comes in the newest version the machine's huggingface-hub
allows. Uses ``pip install --no-index --no-deps --target``, or unpacks the wheel where pip is missing.

    python bench/gpu/install_wheels.py --wheels .whl --target out/gpu_env/site   # prints the modules installed
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
import zipfile
from pathlib import Path

# module -> wheel distribution name (as in the wheel's file name); in install order
MODULES = {
    "zipp": "zipp", "importlib_metadata": "importlib_metadata", "idna": "idna", "certifi": "certifi",
    "charset_normalizer": "charset_normalizer", "urllib3": "urllib3", "requests": "requests", "tqdm": "tqdm",
    "diffusers": "diffusers", "trimesh": "trimesh", "av": "av", "xatlas": "xatlas",
    "fast_simplification": "fast_simplification",
}
DIFFUSERS_NEEDS_HUB = {"0.42.1": (1, 32), "0.35.2": (0, 34)}  # diffusers wheel -> lowest huggingface-hub


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def pick_diffusers(wheels: list[Path]) -> Path:
    """The newest diffusers wheel whose huggingface-hub requirement the machine meets."""
    try:
        hub = _version_tuple(importlib.metadata.version("huggingface_hub"))
    except importlib.metadata.PackageNotFoundError:
        hub = (0,)
    for version, lowest in sorted(DIFFUSERS_NEEDS_HUB.items(), key=lambda kv: _version_tuple(kv[0]), reverse=True):
        for w in wheels:
            if w.name.startswith(f"diffusers-{version}-") and hub >= lowest:
                return w
    raise SystemExit(f"no diffusers wheel in the wheel folder fits huggingface-hub {'.'.join(map(str, hub))}")


def wheel_for(dist: str, wheels: list[Path]) -> Path:
    if dist == "diffusers":
        return pick_diffusers(wheels)
    found = [w for w in wheels if w.name.split("-")[0].lower() == dist.lower()]
    if not found:
        raise SystemExit(f"no wheel for {dist} in the wheel folder: run bench/gpu/fetch_wheels.sh where there is a network")
    return sorted(found)[-1]


def install(wheel: Path, target: Path) -> None:
    """``pip install --no-index --no-deps --target``, or unpack the wheel when this Python has no pip."""
    if importlib.util.find_spec("pip") is not None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--upgrade",
                        "--disable-pip-version-check", "--target", str(target), str(wheel)], check=True)
        return
    with zipfile.ZipFile(wheel) as z:  # a wheel is a zip of the site-packages layout
        z.extractall(target)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--wheels", type=Path, default=Path(".whl"), help="the wheel folder (default .whl)")
    p.add_argument("--target", type=Path, required=True, help="folder to install into (put it on PYTHONPATH)")
    p.add_argument("--force", nargs="*", default=[], help="modules to install even if they import already")
    args = p.parse_args(argv)

    missing = [m for m in MODULES if m in args.force or importlib.util.find_spec(m) is None]
    if not missing:
        return 0
    wheels = sorted(args.wheels.glob("*.whl")) if args.wheels.is_dir() else []
    args.target.mkdir(parents=True, exist_ok=True)
    for module in missing:
        wheel = wheel_for(MODULES[module], wheels)
        install(wheel, args.target)
        print(f"{module}: {wheel.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
