"""The package's import rules: cli -> api -> explain -> {gan, seg} -> engine -> io -> errors, gan and seg
apart.

Checked twice: statically (every import statement of every module, function-local ones included) and
by importing each subpackage alone in a fresh interpreter (an import cycle fails there; a light module
that pulls in Keras or TensorFlow shows in ``sys.modules``).
"""

import ast
import configparser
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Rank of each part: a module may import its own part and any part of a lower rank.
RANKS = {"errors": 0, "io": 1, "engine": 2, "gan": 3, "seg": 3, "explain": 4, "api": 5, "cli": 6}
LIGHT = ["gan_seg", "gan_seg.errors", "gan_seg.engine.options", "gan_seg.engine.cluster",
         "gan_seg.engine.run_dir", "gan_seg.gan.config", "gan_seg.seg.config", "gan_seg.api",
         "gan_seg_cli.main", "gan_seg_cli.train", "gan_seg_cli.sample", "gan_seg_cli.segment",
         "gan_seg_cli.models", "gan_seg_cli.occlusion", "gan_seg_cli.features", "gan_seg.explain.occlusion",
         "gan_seg.explain.targets", "gan_seg.explain.render"]


def _part(module):
    """The part of the package a dotted module name belongs to, or None outside gan-seg."""
    if module == "gan_seg_cli" or module.startswith("gan_seg_cli."):
        return "cli"
    if module == "gan_seg":
        return "root"
    if not module.startswith("gan_seg."):
        return None
    return module.split(".")[1]


def _modules():
    """``{dotted name: path}`` of every module of gan_seg and the CLI."""
    found = {}
    for path in sorted((ROOT / "gan_seg").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in sorted((ROOT / "cli").glob("*.py")):
        name = "gan_seg_cli" + ("" if path.stem == "__init__" else f".{path.stem}")
        found[name] = path
    return found


def _imports(path, module):
    """Every module named by an import statement in ``path`` (relative imports resolved)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[:-node.level] if path.stem != "__init__" else module.split(".")
                base = ".".join(package + ([base] if base else []))
            names += [f"{base}.{alias.name}" if base in ("gan_seg", "gan_seg.seg", "gan_seg.gan",
                                                           "gan_seg.engine", "gan_seg.io") else base
                      for alias in node.names]
    return names


def test_every_import_goes_down_the_layers():
    wrong = []
    for module, path in _modules().items():
        here = _part(module)
        if here in ("root", None) or module == "gan_seg.__main__":
            continue
        for name in _imports(path, module):
            there = _part(name)
            if there is None or there not in RANKS or there == here:
                if here != "cli" and name.split(".")[0] in ("click", "gan_seg_cli"):
                    wrong.append(f"{module} imports {name}")
                continue
            if RANKS.get(there, 99) >= RANKS[here]:
                wrong.append(f"{module} ({here}) imports {name} ({there})")
    assert not wrong, "\n".join(wrong)


def test_the_static_check_sees_a_wrong_import(tmp_path):
    """The checker itself: an engine module that imports the GAN family is caught."""
    path = tmp_path / "bad.py"
    path.write_text("def f():\n    from gan_seg.gan import trainer\n")
    assert _part(_imports(path, "gan_seg.engine.bad")[0]) == "gan"


def _fresh_import(modules):
    """Import ``modules`` in a fresh interpreter; returns the gan-seg parts and heavy libraries loaded."""
    code = (f"import json, sys\nfor m in {modules!r}:\n    __import__(m)\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('keras', 'tensorflow', 'gan_seg', 'gan_seg_cli', 'click'))))")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("part", ["engine", "io", "gan", "seg", "explain"])
def test_each_subpackage_imports_alone_without_its_siblings(part):
    modules = [m for m in _modules() if _part(m) == part]
    loaded = _fresh_import(modules)
    parts = {_part(m) for m in loaded} - {None, "root"}
    allowed = {p for p, rank in RANKS.items() if rank < RANKS[part]} | {part}
    assert parts <= allowed, f"importing gan_seg.{part} loaded {sorted(parts - allowed)}"
    assert "click" not in loaded


def test_light_modules_import_neither_keras_nor_tensorflow():
    loaded = _fresh_import(LIGHT)
    assert not [m for m in loaded if m.split(".")[0] in ("keras", "tensorflow")]


def test_setup_cfg_installs_every_package():
    """A subpackage missing from setup.cfg's list works from a checkout but not when installed."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "gan_seg").rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [options] packages in setup.cfg"
