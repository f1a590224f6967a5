import subprocess
import sys
from pathlib import Path

import pytest

from nnint import plugins
from nnint.errors import PluginError, UnknownBackendError, UnknownModelError

ROOT = Path(__file__).resolve().parents[2]


def test_builtin_plugins_register_through_the_hooks():
    names = plugins.backends()
    assert {"torch", "classical"} <= set(names)
    pm = plugins.get_plugin_manager()
    registered = {pm.get_name(p) for p in pm.get_plugins()}
    assert set(plugins.DEFAULT_PLUGINS) <= registered


def test_unknown_backend_and_model():
    with pytest.raises(UnknownBackendError, match="available"):
        plugins.get_backend("nope")
    with pytest.raises(UnknownModelError, match="nnint models"):
        plugins.resolve_model("no-such-model")


def test_model_folder_path_resolves_to_torch(tmp_path):
    spec = plugins.resolve_model(tmp_path)
    assert spec.backend == "torch" and spec.path == tmp_path.resolve() and spec.license == "unknown"
    (tmp_path / "LICENSE").write_text("CC BY-NC-SA 4.0\nfull text\n")
    assert plugins.resolve_model(tmp_path).license == "CC BY-NC-SA 4.0"  # the first line, as listed


def test_bad_registration_is_reported():
    class Bad:
        @plugins.hookimpl
        def nnint_register_backends(self, register):
            register("not a spec")

    pm = plugins.get_plugin_manager()
    bad = Bad()
    pm.register(bad)
    try:
        with pytest.raises(PluginError, match="BackendSpec"):
            plugins.backends()
    finally:
        pm.unregister(bad)


@pytest.fixture
def example_plugin_installed(tmp_path, monkeypatch):
    """Install examples/nnint-example-backend like a user would (pip, offline) into a private
    target folder, put it on sys.path and reload the plugins from entry points."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT / "examples" / "nnint-example-backend")],
        check=True,
    )
    monkeypatch.syspath_prepend(str(target))
    monkeypatch.delenv("NNINT_NO_ENTRYPOINTS", raising=False)
    plugins.reset_plugin_manager()
    yield target
    plugins.reset_plugin_manager()


def test_third_party_backend_package(example_plugin_installed, tmp_path, small_image):
    from nnint import Point, Session
    from nnint.cli import main

    assert "flood" in plugins.backends()
    engine = plugins.load_engine(backend="flood")
    s = Session(small_image, engine)
    s.add(Point((6, 8, 10)))
    assert s.active.mask[6, 8, 10] == 1
    img = tmp_path / "img.nrrd"
    small_image.write(img)
    rc = main(["segment", str(img), "--backend", "flood", "--point", "6,8,10", "-o", str(tmp_path / "m.nrrd")])
    assert rc == 0 and (tmp_path / "m.nrrd").exists()


def test_classical_backend_needs_no_model(small_image):
    engine = plugins.load_engine(backend="classical")
    assert "point" in engine.capabilities.prompt_kinds


def test_torch_backend_needs_a_model(monkeypatch):
    monkeypatch.setattr(plugins, "default_model_name", lambda: None)  # as without a bundled model
    with pytest.raises(UnknownModelError, match="needs a model"):
        plugins.load_engine(backend="torch")
