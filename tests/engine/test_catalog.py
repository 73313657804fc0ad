"""The model catalog: lookup by name or path, the no-paths mode of the service, vocabulary checks."""

import json

import pytest

from sjc_engine.catalog import ModelNotFoundError, PromptError, resolve_model


@pytest.fixture
def model_dir(tmp_path):
    folder = tmp_path / "models" / "toy"
    folder.mkdir(parents=True)
    meta = {"name": "toy", "kind": "pixel", "vocabulary": {"colors": ["red", "blue"], "shapes": ["cube"]},
            "defaults": {"render_size": 32}}
    (folder / "sjc_model.json").write_text(json.dumps(meta))
    return folder


def test_by_name_under_model_dirs_and_by_path(model_dir, monkeypatch):
    info = resolve_model("toy", [model_dir.parent])
    assert info.path == model_dir.resolve() and info.kind == "pixel" and info.defaults == {"render_size": 32}
    assert resolve_model(str(model_dir)).path == model_dir.resolve()
    monkeypatch.chdir(model_dir.parent)
    assert resolve_model("toy").path == model_dir.resolve()  # relative to the working directory


def test_service_mode_never_takes_a_path(model_dir, monkeypatch):
    monkeypatch.chdir(model_dir.parent)
    with pytest.raises(ModelNotFoundError, match="no model folders are configured"):
        resolve_model("toy", allow_paths=False)
    with pytest.raises(ModelNotFoundError, match="looked in"):
        resolve_model(str(model_dir), [model_dir.parent], allow_paths=False)
    assert resolve_model("toy", [model_dir.parent], allow_paths=False).name == "toy"


def test_missing_model_names_where_it_looked(tmp_path):
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("absent", [tmp_path])
    assert str(tmp_path / "absent") in str(err.value) and "nothing is downloaded" in str(err.value)


def test_vocabulary(model_dir):
    info = resolve_model("toy", [model_dir.parent])
    assert info.check_prompt("  A Red   cube ") == "a red cube"
    for bad in ("a green cube", "a red blue cube", "a red", "", "a red cube please"):
        with pytest.raises(PromptError):
            info.check_prompt(bad)
    with pytest.raises(PromptError, match=r"colours \['red', 'blue'\]"):
        info.check_prompt("a cow")


def test_torch_threads_recommendation(model_dir):
    from sjc_engine.denoisers.errors import ModelLoadError

    assert resolve_model("toy", [model_dir.parent]).torch_threads is None  # none given: every usable core
    assert resolve_model("embedded").torch_threads == 1
    meta = json.loads((model_dir / "sjc_model.json").read_text())
    for bad in (0, "2", 1.5, True):
        (model_dir / "sjc_model.json").write_text(json.dumps({**meta, "torch_threads": bad}))
        with pytest.raises(ModelLoadError, match="torch_threads must be an integer >= 1") as err:
            resolve_model("toy", [model_dir.parent])
        assert err.value.file.name == "sjc_model.json"
