"""Shared fixtures for the nrlib unit tests.

The unit tests must run in well under three minutes on a 2-core CPU, so the
only training is one session-scoped fixture: the ``shallow`` MNIST CNN of
Karnine et al. (2024) fitted for one epoch on 4,000 training images (a few
seconds), reused — through deep copies where a test could alter it — by the
attack, hook, metric and dominant-filter tests.

Tests that write (the notebook smoke runs, the benchmarks) never write into
the repository's ``data/``: ``isolated_data_root`` points ``$NRLIB_DATA`` at a
temporary folder in which the datasets are symbolic links to the real ones
(one folder per run, shared by pytest-xdist's workers, so a model that one
chapter's smoke run trains is loaded by the other chapters and the benchmarks).
A test that needs a dataset that is not on disk is skipped, saying which one
and where it was looked for.
"""
from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from nrlib import data, metrics, models, train  # noqa: E402

# One intra-op thread unless the caller chose otherwise: the models here are tiny,
# so a second thread buys nothing, and on a 2-core box where anything else is busy
# (a notebook running beside the tests) OpenMP's spinning threads stall — measured
# 151 s for the unit tests with two threads vs 21 s with one, under the same load.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)
    # Under pytest-xdist (`make test` runs one worker per core), the notebook kernels a worker
    # starts inherit one thread too: two workers' kernels with two threads each on two cores
    # oversubscribe the CPU and each runs several times slower.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"


BUILT_BOOK_MODULES = {"test_book_html.py", "test_browser.py"}     # users of the `built_book` fixture
NOTEBOOK_RUN = "::test_notebook_runs_at_smoke_profile["            # tests/test_notebooks.py


@pytest.fixture(autouse=True)
def _panels_as_in_jupyterlab(monkeypatch):
    """Every test starts with live slider panels drawn in full (no ``NRBOOK_STATIC``, no smoke
    frame cap), and what a test sets, itself or through ``runbook.main``, is undone after it."""
    from nrlib.widgets import FRAMES_ENV, STATIC_ENV

    for var in (STATIC_ENV, FRAMES_ENV):
        monkeypatch.delenv(var, raising=False)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """The notebook smoke runs, a minute or more each, go first (``make test`` hands them out one
    per free worker: ``pytest_xdist_make_scheduler``)."""
    notebooks = [i for i in items if i.get_closest_marker("notebook")]
    items[:] = notebooks + [i for i in items if not i.get_closest_marker("notebook")]


@pytest.hookimpl(optionalhook=True)     # pytest-xdist's hook: a run without xdist ignores it
def pytest_xdist_make_scheduler(config, log):
    """``make test``'s ``--dist loadgroup``, done by module: each notebook smoke run is a unit of
    its own, and every other module's tests stay together on one worker, so a module- or
    session-scoped fixture (a trained model, the built book) is built once a run. pytest-xdist's
    own ``loadgroup`` groups by ``xdist_group`` marks through a node-id suffix that pytest 9 no
    longer takes, so that every test went to whichever worker was free."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::")[0]
            if NOTEBOOK_RUN in nodeid:
                return nodeid
            return "built_book" if Path(module).name in BUILT_BOOK_MODULES else module

    return ByModule(config, log)

# One epoch of Adam (lr 3e-3, batch 32) on 4,000 images gives 94.0% on the
# 1,000-image test subset (seeded); test_train asserts > 90%. Keras-style RMSprop
# at batch 128 on 3,000 images reaches only ~74% in one epoch.


DATASET_FOLDERS = {"mnist": (data.MNIST_DIR, data.MNIST_FILES), "cifar10": (data.CIFAR_DIR, data.CIFAR_FILES)}


def missing_dataset(name: str, root: Path | None = None) -> str | None:
    """Why ``name`` cannot be read from ``root`` (default: the data root), or None when its files are there."""
    root = Path(root) if root is not None else data.data_root()
    folder, _ = DATASET_FOLDERS[name]
    absent = data.missing_files(name, root)
    if absent:
        return (f"dataset {name!r} is not on disk: {root / folder} lacks {absent} "
                f"(see data/README.md for how to provide it, or set $NRLIB_DATA)")
    return None


def require_datasets(*names: str) -> None:
    """Skip the calling test, with the reason, unless every dataset in ``names`` is on disk."""
    for name in names:
        why = missing_dataset(name)
        if why:
            pytest.skip(why)


@pytest.fixture(scope="session")
def tmp_data_root(tmp_path_factory) -> Path:
    """A temporary data root for this test run, shared by its pytest-xdist workers: ``MNIST`` and
    ``cifar-10-batches-py`` are symbolic links to the real data root's (never written through),
    everything else — checkpoints, results, caches — is written here. Skips when a dataset is
    missing."""
    import fcntl

    require_datasets(*DATASET_FOLDERS)
    src = data.data_root().resolve()
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):    # one root for all of the run's workers: a model that
        base = base.parent                       # one trains, the others load (zoo_get locks it)
    root = base / "nrlib_data"
    with open(base / "nrlib_data.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        root.mkdir(exist_ok=True)
        for folder, _ in DATASET_FOLDERS.values():
            link = root / folder.parts[0]
            if not link.is_symlink():
                link.symlink_to((src / folder.parts[0]).resolve(), target_is_directory=True)
    return root


@pytest.fixture
def isolated_data_root(tmp_data_root, monkeypatch) -> Path:
    """``$NRLIB_DATA`` points at the session's temporary data root for one test (a papermill
    kernel started by the test inherits it)."""
    monkeypatch.setenv("NRLIB_DATA", str(tmp_data_root))
    return tmp_data_root


@pytest.fixture(scope="session")
def mnist_train_small():
    """4,000 class-stratified MNIST training images (pixels in [0, 1])."""
    require_datasets("mnist")
    return data.load("mnist", "train", n=4000, seed=0)


@pytest.fixture(scope="session")
def mnist_test_small():
    """1,000 class-stratified MNIST test images."""
    require_datasets("mnist")
    return data.load("mnist", "test", n=1000, seed=0)


@pytest.fixture(scope="session")
def _trained_shallow_session(mnist_train_small, mnist_test_small):
    x, y = mnist_train_small
    torch.manual_seed(0)  # initial weights and dropout masks
    model = models.build("shallow", "mnist")
    hist = train.fit(model, x, y, optimizer="adam", lr=3e-3, batch_size=32, max_epochs=1,
                     patience=None, seed=0, progress=False)
    xt, yt = mnist_test_small
    acc = metrics.accuracy(model, xt, yt)
    return model.eval(), hist, acc


@pytest.fixture
def trained_shallow(_trained_shallow_session):
    """A private copy of the trained shallow CNN (eval mode) for one test."""
    return copy.deepcopy(_trained_shallow_session[0])


@pytest.fixture(scope="session")
def trained_shallow_fit(_trained_shallow_session):
    """``(history, test accuracy)`` of the session model's training run."""
    return _trained_shallow_session[1], _trained_shallow_session[2]


@pytest.fixture
def batch(mnist_test_small):
    """64 test images and labels, the batch most attack/hook tests use."""
    x, y = mnist_test_small
    return x[:64].clone(), y[:64].clone()



# --- headless Chromium for the browser tests (tests/test_browser.py, tests/test_jupyterlab.py) ---
# The system's Chromium and its driver, never a browser or driver Selenium downloads itself.
CHROMIUM = Path(os.environ.get("NRBOOK_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("NRBOOK_CHROMEDRIVER", "/usr/bin/chromedriver"))


def absent_in_ci(why: str) -> None:
    """Skip the calling test with ``why`` — or fail it under CI (``$CI`` set), where what is
    missing (Chromium, its driver, selenium) is installed by ``.ci/run`` and must be there."""
    if os.environ.get("CI"):
        pytest.fail(f"{why} (CI is set: .ci/run installs chromium, chromium-driver and the dev extra)")
    pytest.skip(why)


def _chromium_options(webdriver, *, offline: bool, loopback: bool, size: tuple[int, int]):
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--disable-breakpad", "--disable-crash-reporter",
                f"--window-size={size[0]},{size[1]}"):
        opts.add_argument(arg)
    if offline:
        # no name resolves and every http(s) request goes to a closed port (IP literals too);
        # file:// pages load, and 127.0.0.1 where `loopback` (a local JupyterLab)
        opts.add_argument("--host-resolver-rules=MAP * ~NOTFOUND" + (" , EXCLUDE 127.0.0.1" if loopback else ""))
        opts.add_argument("--proxy-server=http://127.0.0.1:9")
        opts.add_argument("--proxy-bypass-list=" + ("127.0.0.1" if loopback else "<-loopback>"))
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return opts


@pytest.fixture(scope="session")
def chromium():
    """A factory of headless system-Chromium sessions driven by Selenium: ``chromium(offline=True,
    loopback=False, size=(1280, 1000))`` returns a ``selenium.webdriver.Chrome`` with the network
    blocked (``loopback``: except 127.0.0.1) and the console log kept (``driver.get_log("browser")``).
    Every session is closed at the end of the test session. Skips (fails under CI) when selenium,
    Chromium or chromedriver is missing; never lets Selenium Manager fetch a browser or driver."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common import selenium_manager
    except ImportError:
        absent_in_ci("selenium is not installed (pip install -e '.[dev]')")
    for path, pkg in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (path.is_file() and os.access(path, os.X_OK)):
            absent_in_ci(f"{path} not found: install the Debian package {pkg} (apt-get install {pkg})")

    def no_manager(*args, **kwargs):
        raise RuntimeError("Selenium Manager is not used here: the tests drive the system's Chromium")

    drivers = []

    def start(*, offline: bool = True, loopback: bool = False, size: tuple[int, int] = (1280, 1000)):
        mp = pytest.MonkeyPatch()
        mp.setattr(selenium_manager.SeleniumManager, "binary_paths", no_manager)
        try:
            driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                                      options=_chromium_options(webdriver, offline=offline, loopback=loopback,
                                                                size=size))
        finally:
            mp.undo()
        drivers.append(driver)
        return driver

    yield start
    for driver in drivers:                     # those a test left open
        process = getattr(driver.service, "process", None)
        if process is not None and process.poll() is None:
            driver.quit()


# --- the HTML book, built once per test session (tests/test_book_html.py, tests/test_browser.py) ---
BOOK_PAGES = ("_config.yml", "_toc.yml", "book")     # what the book is built from
BOOK_BUILD_TIMEOUT = 600                            # s; a build takes about 10 s on the 2-core box


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> Path:
    """The HTML book built from the repository's pages — ``_config.yml``, ``_toc.yml`` and
    ``book/`` (the executed notebooks as they are; nothing is executed) — copied into a
    temporary folder and built there by ``jupyter-book build --warningiserror --keep-going``,
    as ``make html`` does: any Sphinx warning fails the fixture, with the build's log. Returns
    the ``_build/html`` folder. Nothing is written into the repository. Skips when jupyter-book
    is not installed (the ``book`` extra), except under CI (``$CI`` set), where it fails."""
    import shutil
    import subprocess
    import time

    exe = Path(sys.executable).with_name("jupyter-book")
    if not exe.is_file():
        found = shutil.which("jupyter-book")
        if found is None:
            why = "jupyter-book is not installed (pip install -e '.[book]')"
            if os.environ.get("CI"):
                pytest.fail(why)
            pytest.skip(why)
        exe = Path(found)
    src = tmp_path_factory.mktemp("book_src")
    for name in BOOK_PAGES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns(".*", "__pycache__"))
        else:
            shutil.copy2(path, src / name)
    t0 = time.perf_counter()
    proc = subprocess.run([str(exe), "build", "--warningiserror", "--keep-going", str(src)],
                          cwd=src, capture_output=True, text=True, timeout=BOOK_BUILD_TIMEOUT)
    seconds = time.perf_counter() - t0
    html = src / "_build" / "html"
    if proc.returncode != 0 or not (html / "index.html").is_file():
        log = (proc.stdout + proc.stderr)[-6000:]
        pytest.fail(f"jupyter-book build failed (exit {proc.returncode}, {seconds:.0f} s); end of its log:\n{log}")
    return html


def toc_pages() -> list[str]:
    """The book's pages in ``_toc.yml`` order, as paths without suffix (``book/intro``, ...)."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                pages.append(e["file"])
            for key in ("chapters", "sections", "parts"):
                walk(e.get(key))

    walk(toc.get("chapters"))
    walk(toc.get("parts"))
    return [str(Path(p).with_suffix("")) for p in pages]
