"""What can be checked of the deployment files without a Docker engine or a cluster.

docker-compose.yml and deploy/k8s/*.yaml parse and hold what an operator relies on (every service,
health checks, named volumes, the GPU reservation, settings that Settings accepts); the entry points
named by the images exist and import; the API image's requirements cover what the API imports and
hold no torch; the scripts are valid bash.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
HEAVY = ("torch", "diffusers", "transformers", "accelerate", "trimesh", "skimage", "scipy", "av", "imageio",
         "numpy", "safetensors")


# -- helpers ----------------------------------------------------------------------------------------

def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def k8s_docs() -> list[dict]:
    docs: list[dict] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") != "Kustomization"]
    return docs


def k8s(kind: str, name: str) -> dict:
    found = [d for d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def compose_default(value: str) -> str:
    """``${VAR:-default}`` -> ``default`` (compose's substitution with nothing set)."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(value))


def dockerfile_cmd(name: str) -> list[str]:
    text = (DEPLOY / name).read_text()
    cmds = [json.loads(m) for m in re.findall(r"^CMD (\[.*\])\s*$", text, flags=re.M)]
    assert cmds, f"{name} has no exec-form CMD"
    return cmds[-1]


def all_commands() -> list[list[str]]:
    """Every container command of the images, compose and the k8s manifests."""
    cmds = [dockerfile_cmd("api.Dockerfile"), dockerfile_cmd("worker.Dockerfile")]
    for service in compose()["services"].values():
        if isinstance(service.get("command"), list) and service["command"][:1] == ["python"]:
            cmds.append(service["command"])
    for doc in k8s_docs():
        if doc["kind"] == "Deployment":
            cmds += [c["command"] for c in doc["spec"]["template"]["spec"]["containers"] if "command" in c]
    return cmds


IMPORT_CHECK = """
import importlib, importlib.abc, sys
blocked = set(sys.argv[3].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if blocked and name.split(".")[0] in blocked:
            raise ImportError(f"{name} is imported but is not in the image")
sys.meta_path.insert(0, Block())
module = importlib.import_module(sys.argv[1])
attr = sys.argv[2]
if attr:
    print(type(getattr(module, attr)).__name__)
else:
    from celery import Celery
    apps = [v for v in vars(module).values() if isinstance(v, Celery)]
    assert apps, f"no Celery app in {sys.argv[1]}"
    print("Celery")
"""


def import_in_subprocess(module: str, attr: str = "", blocked: tuple[str, ...] = ()) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SJC_")}
    env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    proc = subprocess.run([sys.executable, "-c", IMPORT_CHECK, module, attr, ",".join(blocked)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"importing {module} failed:\n{proc.stderr[-3000:]}"
    return proc.stdout.strip()


# -- docker-compose ---------------------------------------------------------------------------------

def test_compose_names_every_service_with_health_checks():
    services = compose()["services"]
    assert {"redis", "minio", "api", "worker", "worker-cpu"} <= set(services)
    for name, service in services.items():
        if service.get("restart") == "no":  # one-shot init containers (bucket creation)
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"service {name} has no health check"


def test_compose_persists_redis_and_minio_in_named_volumes():
    doc = compose()
    declared = set(doc["volumes"])
    for name in ("redis", "minio"):
        mounts = [v.split(":")[0] for v in doc["services"][name]["volumes"]]
        assert any(m in declared for m in mounts), f"{name} has no named volume"
    assert "--appendonly" in doc["services"]["redis"]["command"]
    command = doc["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    for service in doc["services"].values():  # every named volume used is declared
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"volume {source} is not declared"


def test_compose_gpu_worker_reserves_a_gpu_and_cpu_worker_is_a_profile():
    services = compose()["services"]
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert services["worker-cpu"]["profiles"] == ["cpu"] and "deploy" not in services["worker-cpu"]
    for name in ("worker", "worker-cpu"):
        cmd = services[name]["command"]
        assert cmd[cmd.index("-c") + 1] == "1", "one worker process per GPU"
    assert services["worker-cpu"]["environment"]["SJC_WORKER_DEVICE"] == "cpu"


def settings_from(env: dict[str, str], monkeypatch):
    from sjc_service.settings import Settings

    for key in list(os.environ):
        if key.startswith("SJC_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


@pytest.mark.parametrize("service", ["api", "worker", "worker-cpu"])
def test_compose_settings_are_settings_fields_and_valid(service, monkeypatch):
    from sjc_service.settings import Settings

    env = {k: compose_default(v) for k, v in compose()["services"][service]["environment"].items()}
    sjc = {k: v for k, v in env.items() if k.startswith("SJC_")}
    unknown = {k for k in sjc if k[4:].lower() not in Settings.model_fields}
    assert not unknown, f"not settings of sjc_service/settings.py: {sorted(unknown)}"
    settings = settings_from(sjc, monkeypatch)
    assert settings.store == "s3" and settings.redis_url == "redis://redis:6379/0"
    assert settings.visibility_timeout_s > settings.hard_time_limit_s > settings.soft_time_limit_s


# -- kubernetes -------------------------------------------------------------------------------------

def test_k8s_manifests_parse_and_reference_each_other():
    docs = k8s_docs()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for needed in [("Namespace", "sjc"), ("ConfigMap", "sjc-config"), ("Secret", "sjc-secrets"),
                   ("Deployment", "redis"), ("Service", "redis"), ("PersistentVolumeClaim", "redis-data"),
                   ("Deployment", "api"), ("Service", "api"), ("Deployment", "worker")]:
        assert needed in kinds, f"missing {needed}"
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    for dep in deployments:
        spec = dep["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items(), dep["metadata"]["name"]
        pod = spec["template"]["spec"]
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in kinds
        for container in pod["containers"]:
            for ref in container.get("envFrom", []):
                kind, key = ("ConfigMap", "configMapRef") if "configMapRef" in ref else ("Secret", "secretRef")
                assert (kind, ref[key]["name"]) in kinds
    for svc in (d for d in docs if d["kind"] == "Service"):
        selector = svc["spec"]["selector"].items()
        assert any(selector <= d["spec"]["template"]["metadata"]["labels"].items() for d in deployments)
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert all((K8S / r).is_file() for r in kustomization["resources"])
    assert {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"} == set(kustomization["resources"])


def test_k8s_worker_requests_one_gpu_and_outlives_the_soft_limit():
    pod = k8s("Deployment", "worker")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    cmd = container["command"]
    assert cmd[cmd.index("-c") + 1] == "1"
    config = k8s("ConfigMap", "sjc-config")["data"]
    assert pod["terminationGracePeriodSeconds"] > int(config["SJC_SOFT_TIME_LIMIT_S"])


def test_k8s_api_probes_and_settings(monkeypatch):
    (container,) = k8s("Deployment", "api")["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    env = {**k8s("ConfigMap", "sjc-config")["data"], **k8s("Secret", "sjc-secrets")["stringData"]}
    settings = settings_from({k: str(v) for k, v in env.items()}, monkeypatch)
    assert settings.visibility_timeout_s > settings.hard_time_limit_s
    assert settings.api_key_pairs()  # the placeholder has the right shape


def test_k8s_redis_persists_with_aof():
    (container,) = k8s("Deployment", "redis")["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--appendonly") + 1] == "yes"


# -- images -----------------------------------------------------------------------------------------

def test_every_container_command_names_an_app_that_exists():
    seen = set()
    for cmd in all_commands():
        if "uvicorn" in cmd:
            seen.add(next(a for a in cmd if re.fullmatch(r"[\w.]+:\w+", a)))
        elif "celery" in cmd:
            seen.add(cmd[cmd.index("-A") + 1])
        else:
            pytest.fail(f"unexpected command {shlex.join(cmd)}")
    assert seen == {"api.main:app", "worker.celery_app", "worker.webhooks"}
    module, attr = "api.main:app".split(":")
    # The API image has no torch: the app must import with the model libraries blocked.
    assert import_in_subprocess(module, attr, blocked=HEAVY) == "FastAPI"
    assert import_in_subprocess("worker.celery_app") == "Celery"
    assert import_in_subprocess("worker.webhooks", blocked=HEAVY) == "Celery"  # runs from the API image


def test_dockerfiles_copy_existing_paths():
    for name in ("api.Dockerfile", "worker.Dockerfile"):
        for line in (DEPLOY / name).read_text().splitlines():
            if line.startswith("COPY "):
                for src in line.split()[1:-1]:
                    assert (ROOT / src).exists(), f"{name}: COPY {src} does not exist"


def requirement_closure(lines: list[str]) -> set[str]:
    """Distribution names of the requirements and everything they pull in (as installed here)."""
    todo = [Requirement(line) for line in lines]
    names: set[str] = set()
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        if name in names:
            continue
        names.add(name)
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            sub = Requirement(text)
            extras = req.extras or {""}
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in extras):
                todo.append(sub)
    return names


def api_requirements() -> list[str]:
    text = (DEPLOY / "requirements-api.txt").read_text()
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


def test_api_requirements_hold_no_torch_and_cover_what_the_api_imports():
    import ast

    reqs = api_requirements()
    assert not any(Requirement(r).name.lower() in ("torch", "diffusers", "transformers") for r in reqs)
    closure = requirement_closure(reqs)
    assert "torch" not in closure
    sources = [*(ROOT / "api").rglob("*.py"), *(ROOT / "sjc_service").rglob("*.py"),
               ROOT / "sjc_engine" / "__init__.py", ROOT / "sjc_engine" / "catalog.py",
               ROOT / "sjc_engine" / "config.py"]
    local = {"api", "sjc_service", "sjc_engine", "sjc_client", "worker"}
    dists = metadata.packages_distributions()
    missing = set()
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for top in {n.split(".")[0] for n in names} - local - set(sys.stdlib_module_names):
                if not any(d.lower().replace("_", "-") in closure for d in dists.get(top, [top])):
                    missing.add(f"{top} ({path.relative_to(ROOT)})")
    assert not missing, f"imported by the API but not in deploy/requirements-api.txt: {sorted(missing)}"


# -- scripts ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("script", ["scripts/demo.sh", "scripts/test.sh", "scripts/_setup.sh", ".ci/run"])
def test_scripts_are_valid_bash(script):
    path = ROOT / script
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    if script == ".ci/run":
        assert os.access(path, os.X_OK)
        assert "scripts/test.sh" in path.read_text()
