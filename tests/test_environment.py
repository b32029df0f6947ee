"""The two ways to install (pip via pyproject.toml, conda via environment.yml) agree, the
science library's dependencies stand apart from the book tooling's (the `book` extra), and the
README's two commands are the ones CI runs."""
from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONDA_TO_PIP = {"pytorch": "torch"}        # conda package name -> PyPI name
NOT_DEPENDENCIES = {"python", "pip"}      # environment plumbing, not dependencies


def parse(spec: str) -> tuple[str, str]:
    """'Jupyter_Book >= 1.0.4, <2' -> ('jupyter-book', '<2,>=1.0.4'): normalised name and constraint."""
    spec = spec.split(";")[0].split("#")[0].strip()          # drop markers and comments
    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)", spec)
    assert m, f"cannot parse the requirement {spec!r}"
    name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
    name = CONDA_TO_PIP.get(name, name)
    constraint = ",".join(sorted(c.strip() for c in m.group(3).replace(" ", "").split(",") if c.strip()))
    return name, constraint


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


EXTRAS = ("book", "dev")                  # environment.yml installs the library with both
BOOK_TOOLING = {"jupyter-book", "papermill", "nbformat", "nbclient", "ipykernel", "jupyterlab",
                "sphinx-mathjax-offline", "sphinx-book-theme", "pydata-sphinx-theme", "distributed", "tabulate"}


def pip_requirements(extras=EXTRAS) -> dict[str, str]:
    project = pyproject()["project"]
    specs = list(project["dependencies"])
    for extra in extras:
        specs += list(project.get("optional-dependencies", {}).get(extra, []))
    parsed = [parse(s) for s in specs]
    assert len({n for n, _ in parsed}) == len(parsed), "pyproject.toml lists a dependency twice"
    return dict(parsed)


def conda_requirements() -> tuple[dict[str, str], str | None]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    specs: list[str] = []
    for item in env["dependencies"]:
        if isinstance(item, dict):                            # the pip: section
            specs += [s for s in item.get("pip", []) if not s.strip().startswith("-")]  # skip "-e ."
        else:
            specs.append(str(item))
    parsed = [parse(s) for s in specs]
    python = dict(parsed).get("python")
    parsed = [(n, c) for n, c in parsed if n not in NOT_DEPENDENCIES]
    assert len({n for n, _ in parsed}) == len(parsed), "environment.yml lists a dependency twice"
    return dict(parsed), python


def test_parse_normalises_names_and_constraints():
    assert parse("Jupyter_Book >= 1.0.4, <2") == ("jupyter-book", "<2,>=1.0.4")
    assert parse("pytorch") == ("torch", "")
    assert parse("nbclient[dev]>=0.5 ; python_version>'3'") == ("nbclient", ">=0.5")


def test_pyproject_and_environment_list_the_same_dependencies():
    pip, (conda, _) = pip_requirements(), conda_requirements()
    only_pip = sorted(set(pip) - set(conda))
    only_conda = sorted(set(conda) - set(pip))
    assert not only_pip and not only_conda, (
        f"pyproject.toml only: {only_pip}; environment.yml only: {only_conda}")
    differ = {n: (pip[n], conda[n]) for n in pip if pip[n] != conda[n]}
    assert not differ, f"version constraints differ (pyproject, environment.yml): {differ}"


def test_python_versions_agree():
    _, python = conda_requirements()
    requires = pyproject()["project"]["requires-python"].replace(" ", "")
    assert python == requires, f"environment.yml python{python} vs pyproject requires-python {requires}"


def test_torch_is_not_pinned():
    assert pip_requirements()["torch"] == "", "torch must not be pinned (CPU and CUDA builds differ)"


def test_ci_runs_the_readme_test_command():
    ci = ROOT / ".ci" / "run"
    assert ci.is_file(), ".ci/run is missing"
    assert os.access(ci, os.X_OK), ".ci/run is not executable"
    lines = [ln.split("#")[0] for ln in ci.read_text().splitlines()]
    assert any(re.search(r"(^|[\s;&|(])make\s+test\b", ln) for ln in lines), ".ci/run does not call `make test`"


def test_readme_names_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    for command in ("make book", "make test"):
        assert command in readme, f"README.md does not mention `{command}`"


def test_makefile_has_the_readme_targets():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("setup", "data", "test", "book", "run", "full", "clean-book"):
        assert re.search(rf"^{re.escape(target)}\s*:", makefile, re.M), f"Makefile has no `{target}` target"


def test_the_book_tooling_is_an_extra_not_a_dependency_of_nrlib():
    project = pyproject()["project"]
    base = {parse(s)[0] for s in project["dependencies"]}
    book = {parse(s)[0] for s in project["optional-dependencies"]["book"]}
    dev = {parse(s)[0] for s in project["optional-dependencies"]["dev"]}
    assert book == BOOK_TOOLING, f"the book extra: {sorted(book)}"
    assert not base & BOOK_TOOLING, f"nrlib's own dependencies include book tooling: {sorted(base & BOOK_TOOLING)}"
    assert {"pytest", "pytest-timeout", "torchattacks"} <= dev
    assert pip_requirements(extras=("dev",))["torchattacks"] == "<3.4,>=3.3"


def test_both_packages_and_the_papers_data_are_installed():
    tool = pyproject()["tool"]["setuptools"]
    assert {"nrlib", "nrlib.papers", "nrbook"} <= set(tool["packages"])
    assert "*.json" in tool["package-data"]["nrlib.papers"]
    assert list((ROOT / "nrlib" / "papers").glob("*.json")), "nrlib/papers/ holds no paper files"


def test_makefile_installs_the_extras_and_calls_nrbook():
    makefile = (ROOT / "Makefile").read_text()
    assert "-e '.[book,dev]'" in makefile
    for module in ("nrbook.runbook", "nrbook.bench"):
        assert f"-m {module}" in makefile, module
    assert "scripts/stage.py pack" in makefile
    assert not re.search(r"-m nrlib\.(runbook|bench|stage)\b", makefile)


FAULTS = """import resource, torch, nrlib
from nrlib.models import build
torch.set_num_threads(2)
m, x = build("resnet20", "cifar10", width=4), torch.rand(64, 3, 32, 32)
def step():                                      # a training step: activations allocated, then freed
    m.zero_grad(); m(x).sum().backward()
for _ in range(3):
    step()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):                               # steady state: page faults of 5 more steps
    step()
print(nrlib.MALLOC_TUNED, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)"""


def _faults(setting: str) -> tuple[str, int]:
    import subprocess
    import sys
    env = {**os.environ, "NRLIB_MALLOC": setting}
    out = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, check=True)
    tuned, faults = out.stdout.split()
    return tuned, int(faults)


def test_importing_nrlib_keeps_freed_blocks_instead_of_faulting_in_new_pages():
    import platform

    import pytest
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("the setting is glibc's")
    (off, default), (on, kept) = _faults("default"), _faults("keep")
    assert (off, on) == ("False", "True")
    assert kept < default / 10, (kept, default)      # measured: 0–768 against 25,000–33,000


def test_a_bad_nrlib_malloc_setting_is_named(monkeypatch):
    import pytest

    from nrlib.utils import keep_freed_memory
    monkeypatch.setenv("NRLIB_MALLOC", "fast")
    with pytest.raises(ValueError, match="NRLIB_MALLOC='fast' is not allowed"):
        keep_freed_memory()
