"""The layout of the house: nrlib (the science a reader imports) stands apart from nrbook (the
book's tooling) and scripts/ (plumbing for one machine), points at nothing outside the
repository, and every command the docs and scripts name exists."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NRLIB_SOURCES = sorted((ROOT / "nrlib").rglob("*.py"))


def imported_modules(path: Path) -> list[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved inside nrlib)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    pkg = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                names.append(".".join(base + ([node.module] if node.module else [])))
            else:
                names.append(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__", "spec_from_file_location"):
            names += [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return names


def test_nrlib_has_sources():
    assert len(NRLIB_SOURCES) > 10 and (ROOT / "nrlib" / "papers" / "__init__.py") in NRLIB_SOURCES


@pytest.mark.parametrize("path", NRLIB_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_nrlib_imports_nothing_from_nrbook_or_scripts(path):
    bad = [m for m in imported_modules(path)
           if m.split(".")[0] in ("nrbook", "scripts") or "scripts/" in m or m.endswith("stage.py")]
    assert not bad, f"{path.relative_to(ROOT)} imports {bad}: nrlib must not depend on the book's tooling"


@pytest.mark.parametrize("path", NRLIB_SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_nrlib_points_at_no_path_outside_the_repository(path):
    text = path.read_text(encoding="utf-8")
    assert "shared/" not in text and "../" not in text, \
        f"{path.relative_to(ROOT)} names a path outside the repository (e.g. ../shared/...); say it in data/README.md"


def test_the_detector_sees_imports():
    src = ROOT / "nrlib" / "results.py"
    mods = imported_modules(src)
    assert "nrlib.profiles" in mods and "torch" in mods


def test_tooling_lives_in_nrbook_and_scripts():
    for gone in ("runbook.py", "bench.py", "stage.py"):
        assert not (ROOT / "nrlib" / gone).exists(), f"nrlib/{gone} belongs to the tooling"
    for there in ("nrbook/__init__.py", "nrbook/runbook.py", "nrbook/results_page.py", "nrbook/bench.py",
                  "scripts/stage.py", "scripts/gpu_full.sh", "scripts/device_wheels.sh", "scripts/install_torch.sh",
                  "data/README.md"):
        assert (ROOT / there).is_file(), there


# files whose commands and paths must exist (other docs are checked by their owners)
DOCS = ["README.md", "Makefile", "data/README.md", "scripts/gpu_full.sh", "scripts/device_wheels.sh",
        "scripts/install_torch.sh",
        "scripts/stage.py", "pyproject.toml", "environment.yml", *sorted(p.relative_to(ROOT).as_posix()
                                                                        for p in (ROOT / "nrbook").glob("*.py"))]


@pytest.mark.parametrize("doc", DOCS)
def test_commands_and_paths_named_in_docs_exist(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    missing = []
    for mod in re.findall(r"-m\s+(nr(?:lib|book)(?:\.[A-Za-z_]+)*)", text):
        path = ROOT / Path(*mod.split("."))
        if not (path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()):
            missing.append(f"python -m {mod}")
    for rel in re.findall(r"(?<![\w/.])((?:nrlib|nrbook|scripts)/[\w./-]*\w)", text):
        if "<" not in rel and "*" not in rel and not (ROOT / rel).exists():
            missing.append(rel)
    assert not missing, f"{doc} names what does not exist: {sorted(set(missing))}"


def test_gpu_script_finds_the_packages_without_an_install():
    sh = (ROOT / "scripts" / "gpu_full.sh").read_text()
    first_python = min(sh.index("$PY scripts/stage.py"), sh.index("$PY -m nrbook.runbook"))
    assert 'export PYTHONPATH="$PWD' in sh[:first_python] or "export PYTHONPATH=\"/tmp/site:$PWD" in sh[:first_python]
    assert '$PY -m nrbook.runbook --profile "$PROFILE"' in sh and "$PY -m nrbook.bench" in sh
    assert 'PROFILE="${PROFILE:-full}"' in sh          # full unless the dry run asks for smoke
    assert "nrlib.runbook" not in sh and "nrlib.stage" not in sh and "nrlib.bench" not in sh


def test_install_torch_falls_back_within_seconds_when_the_cpu_index_is_unreachable(tmp_path):
    """make setup's first step: without an NVIDIA GPU it tries PyTorch's CPU index once, with a short
    timeout, and when that index cannot be reached leaves torch to the project's install, saying so."""
    import os
    import shutil
    import subprocess
    import time
    import venv

    if shutil.which("nvidia-smi") or Path("/proc/driver/nvidia/version").exists():
        pytest.skip("an NVIDIA driver is present: the script leaves torch to the default build")
    venv.create(tmp_path / "v", with_pip=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["TORCH_CPU_INDEX"] = "http://127.0.0.1:9/whl/cpu"           # a closed port: unreachable
    t0 = time.perf_counter()
    out = subprocess.run(["bash", str(ROOT / "scripts" / "install_torch.sh"), str(tmp_path / "v" / "bin" / "python")],
                         capture_output=True, text=True, env=env, timeout=120)
    seconds = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr
    assert "no NVIDIA GPU found; trying PyTorch's CPU wheels" in out.stdout
    assert "could not be reached; the project's install brings PyTorch's default build" in out.stdout, out.stdout
    assert seconds < 30, f"the fallback took {seconds:.0f} s"
