#!/usr/bin/env python3
"""Stage CIFAR-10 for an offline GPU machine in parts small enough to travel.

Plumbing for one environment, not part of the library: a GPU machine without a
network, reached through calls that each carry at most 64 MiB
(the tracked tree, untracked files git does not ignore and the ignored paths
named in ``carry``), yet CIFAR-10's torchvision folder ``cifar-10-batches-py/``
is about 186 MB. Ignored files already on the machine are kept between calls
while it stays warm, so the dataset goes over in parts, one per call, in calls
made back to back, and is rebuilt byte for byte on the machine before the work
starts.

``pack`` concatenates the files of ``FILES`` (a fixed, sorted list; the small
``readme.html`` too when present) into one gzip stream (zlib level 1: ~91% of
the size here, smaller and faster than the higher levels on pickled pixels,
so ~168 MB), cuts it into ``cifar10.part<k>of<n>.bin`` of at most
``part_bytes`` each (by default what the working tree — sent with every call, the
executed chapters among it — leaves of a 64 MiB call, at most 45,000,000: with a
33 MB tree, six parts of ~32 MB; MNIST (11 MB) and the wheels of the packages
the GPU image lacks (~15 MB) ride with calls that have room, or in one of their own)
and writes ``cifar10.manifest.json`` last, with each original file's size and
md5 and each part's size and sha256. ``check`` lists the parts that are
missing or damaged; ``unpack`` rebuilds the files, checking every md5. The
concatenated parts are a plain gzip file (``cat cifar10.part*of4.bin |
gunzip``), the files back to back in the manifest's order.

    python scripts/stage.py pack   [--src DIR] [--out DIR] [--part-bytes N]
    python scripts/stage.py check  [--folder DIR]
    python scripts/stage.py unpack [--folder DIR] [--dest DIR]

``pack`` prints the ``carry`` paths of each device call. MNIST (11 MB, four
``.gz`` files) is not packed: ``make stage`` copies ``data/MNIST/raw/*.gz``
into ``data/gpu/MNIST/raw/`` (``cp -L``, since ``data/MNIST`` is usually a
symbolic link, and a link travels only as a link) and that folder is carried
whole with one call; ``scripts/gpu_full.sh`` puts it back in place.

It uses ``nrlib.data.data_root`` (``$NRLIB_DATA``, default ``data/``) and two
helpers of ``nrlib.utils``; run from a checkout without ``pip install``, it puts
the repository root on ``sys.path`` itself (the GPU machine has no install).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:    # `python scripts/stage.py` from a checkout that is not installed
    sys.path.insert(0, str(ROOT))

from nrlib.data import data_root, file_digest  # noqa: E402
from nrlib.utils import atomic_write_bytes, check_int, check_name  # noqa: E402
# what one device call carries and the largest part: the staging rule nrbook.budget counts with
from nrbook.budget import CALL_BYTES, PART_BYTES, part_bytes as _room, tree_bytes  # noqa: E402

NAME = "cifar10"
MANIFEST = f"{NAME}.manifest.json"
FORMAT = "nrlib.stage/1"     # the manifest's format (named when this lived in nrlib; packs stay valid)
FILES = ("batches.meta", "data_batch_1", "data_batch_2", "data_batch_3",
         "data_batch_4", "data_batch_5", "test_batch")  # required, in stream order
OPTIONAL = ("readme.html",)                              # packed when present
MIN_PART_BYTES = 100_000     # low enough for the unit tests' small parts
LEVEL = 1                    # zlib level: see the module docstring
CHUNK = 1 << 22              # 4 MiB reads keep memory modest
_GZIP = 16 + zlib.MAX_WBITS  # wbits for a gzip header and trailer


def default_src() -> Path:
    return data_root() / "cifar-10-batches-py"


def default_folder() -> Path:
    return data_root() / "gpu"


def part_name(k: int, n: int) -> str:
    n = check_int("n", n, low=1)
    return f"{NAME}.part{check_int('k', k, low=1, high=n)}of{n}.bin"


def _path(name: str, value, default) -> Path:
    """``value`` as a Path (``default()`` when None); anything but a str or os.PathLike is refused."""
    if value is None:
        return default()
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ValueError(f"{name}={value!r} must be a folder path (a str or pathlib.Path), or None for the default")
    return Path(value)


_DIGESTS = {"files": ("md5", 32), "parts": ("sha256", 64)}


def _check_manifest(path: Path, manifest) -> dict:
    """The manifest as ``pack`` writes it, else a ValueError naming the field that is wrong."""
    def bad(what: str):
        raise ValueError(f"{path} is not a valid manifest: {what}; re-run `python scripts/stage.py pack` "
                         f"(make stage) and re-send the manifest with the parts")

    def field(check, *args, **kw):
        try:
            return check(*args, **kw)
        except ValueError as e:
            bad(str(e))

    if not isinstance(manifest, dict):
        bad(f"it holds a JSON {type(manifest).__name__}, not an object")
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} has format={manifest.get('format')!r}; this nrlib reads {FORMAT!r}")
    missing = [k for k in ("part_bytes", "files", "total_bytes", "compressed_bytes", "parts") if k not in manifest]
    if missing:
        bad(f"the fields {missing} are missing")
    field(check_int, "part_bytes", manifest["part_bytes"], low=1)
    for key, (digest, width) in _DIGESTS.items():
        items = manifest[key]
        if not isinstance(items, list) or not items:
            bad(f"{key}={items!r:.60} must be a non-empty list")
        for i, item in enumerate(items):
            if not isinstance(item, dict) or any(k not in item for k in ("name", "bytes", digest)):
                bad(f"{key}[{i}]={item!r:.80} must be an object with 'name', 'bytes' and {digest!r}")
            field(check_name, f"{key}[{i}].name", item["name"])
            field(check_int, f"{key}[{i}].bytes", item["bytes"], low=1 if key == "parts" else 0)
            h = item[digest]
            if not (isinstance(h, str) and re.fullmatch(f"[0-9a-f]{{{width}}}", h)):
                bad(f"{key}[{i}].{digest}={h!r} is not {width} lowercase hex digits")
        names = [item["name"] for item in items]
        if len(set(names)) != len(names):
            bad(f"{key} names a file twice: {names}")
    for key, total in (("files", "total_bytes"), ("parts", "compressed_bytes")):
        if manifest[total] != sum(item["bytes"] for item in manifest[key]):
            bad(f"{total}={manifest[total]!r} is not the sum of the {key}' bytes, "
                f"{sum(item['bytes'] for item in manifest[key])}")
    return manifest


def _sources(src: Path) -> list[str]:
    missing = [n for n in FILES if not (src / n).is_file()]
    if missing:
        raise FileNotFoundError(f"src={str(src)!r} lacks {missing}; a CIFAR-10 folder in torchvision's "
                                f"layout holds {list(FILES)} (run `make data`, or pass --src)")
    return sorted(FILES + tuple(n for n in OPTIONAL if (src / n).is_file()))


def read_manifest(folder: Path | None = None) -> dict:
    """The manifest of ``folder`` (default ``data/gpu``); FileNotFoundError if there is none."""
    folder = _path("folder", folder, default_folder)
    path = folder / MANIFEST
    if not path.is_file():
        where = "" if folder.is_dir() else " (there is no such folder)"
        raise FileNotFoundError(f"no {MANIFEST} in folder={str(folder)!r}{where}: run `python scripts/stage.py "
                                f"pack` (make stage) here, and carry the manifest with every device call")
    try:
        manifest = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}): the manifest is damaged or cut short; re-run "
                         f"`python scripts/stage.py pack` (make stage) and re-send it") from None
    return _check_manifest(path, manifest)


def _problems(folder: Path, manifest: dict) -> dict[str, str]:
    """``{part name: what is wrong}`` for the parts that are missing or damaged."""
    bad = {}
    for part in manifest["parts"]:
        path = folder / part["name"]
        if not path.is_file():
            bad[part["name"]] = "missing"
        elif path.stat().st_size != part["bytes"]:
            bad[part["name"]] = f"{path.stat().st_size} bytes, expected {part['bytes']}"
        elif file_digest(path, "sha256") != part["sha256"]:
            bad[part["name"]] = "sha256 differs from the manifest's"
    return bad


def check(folder: Path | None = None) -> list[str]:
    """Names of the parts in ``folder`` that are missing or have a wrong size or sha256 ([] = complete)."""
    folder = _path("folder", folder, default_folder)
    return list(_problems(folder, read_manifest(folder)))


def _up_to_date(src: Path, names: list[str], folder: Path, part_bytes: int) -> dict | None:
    try:
        manifest = read_manifest(folder)
    except (FileNotFoundError, ValueError, json.JSONDecodeError):
        return None
    files = manifest.get("files", [])
    if manifest.get("part_bytes") != part_bytes or [f["name"] for f in files] != names:
        return None
    if any((src / f["name"]).stat().st_size != f["bytes"] for f in files):
        return None
    if any(file_digest(src / f["name"], "md5") != f["md5"] for f in files):
        return None
    return None if _problems(folder, manifest) else manifest


def pack(src: Path | None = None, out: Path | None = None, part_bytes: int | None = None) -> dict:
    """Pack the CIFAR-10 folder ``src`` into parts of at most ``part_bytes`` in ``out``; return the manifest.

    ``src`` defaults to ``data/cifar-10-batches-py``, ``out`` to ``data/gpu`` (both under the data
    root, which git ignores). Does nothing, and says so, when ``out`` already holds a complete
    pack of the same files with the same ``part_bytes``.
    """
    if part_bytes is None:              # what the working tree leaves of a call, at most PART_BYTES
        part_bytes = _room()
    part_bytes = check_int("part_bytes", part_bytes, low=MIN_PART_BYTES, high=CALL_BYTES)
    src = _path("src", src, default_src)
    out = _path("out", out, default_folder)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={str(out)!r} exists and is not a folder; the parts go into a folder")
    if not src.is_dir():
        raise FileNotFoundError(f"src={str(src)!r} is not a folder; expected CIFAR-10 in torchvision's "
                                f"layout (cifar-10-batches-py/ with {list(FILES)})")
    names = _sources(src)
    done = _up_to_date(src, names, out, part_bytes)
    if done is not None:
        print(f"stage: {out / MANIFEST} already matches {src} (sizes and md5) and all "
              f"{len(done['parts'])} parts are intact; nothing to do")
        return done

    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # an interrupted pack must not leave a manifest that lies
    for stale in [*out.glob(f".{NAME}.part*.pending"), *out.glob(f"{NAME}.part*of*.bin")]:
        stale.unlink()

    files, pending = [], []
    buf = bytearray()
    comp = zlib.compressobj(LEVEL, zlib.DEFLATED, _GZIP)

    def flush(final: bool) -> None:
        while len(buf) >= part_bytes or (final and buf):
            n = min(part_bytes, len(buf))
            path = out / f".{NAME}.part{len(pending) + 1}.pending"
            with memoryview(buf) as view, view[:n] as head:
                atomic_write_bytes(path, head)
                digest = hashlib.sha256(head).hexdigest()
            del buf[:n]
            pending.append({"path": path, "bytes": n, "sha256": digest})

    for name in names:
        h, size = hashlib.md5(), 0
        with open(src / name, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                h.update(block)
                size += len(block)
                buf += comp.compress(block)
                flush(final=False)
        files.append({"name": name, "bytes": size, "md5": h.hexdigest()})
    buf += comp.flush()
    flush(final=True)

    n = len(pending)
    parts = []
    for k, p in enumerate(pending, 1):
        os.replace(p["path"], out / part_name(k, n))
        parts.append({"name": part_name(k, n), "bytes": p["bytes"], "sha256": p["sha256"]})
    manifest = {
        "format": FORMAT,
        "dataset": "CIFAR-10 (torchvision's cifar-10-batches-py/)",
        "compression": f"gzip (zlib level {LEVEL}) of the files back to back, in the order of `files`",
        "part_bytes": part_bytes,
        "files": files,
        "total_bytes": sum(f["bytes"] for f in files),
        "compressed_bytes": sum(p["bytes"] for p in parts),
        "parts": parts,
    }
    atomic_write_bytes(out / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest


def unpack(folder: Path | None = None, dest: Path | None = None) -> Path:
    """Rebuild the CIFAR-10 files from the parts in ``folder`` into ``dest``; return ``dest``.

    ``folder`` defaults to ``data/gpu``, ``dest`` to ``data/cifar-10-batches-py``. Raises
    FileNotFoundError naming the missing parts, ValueError naming damaged ones; every file is
    checked against the manifest's md5 before it is written (atomically). Files already in
    ``dest`` with the right md5 are left as they are.
    """
    folder = _path("folder", folder, default_folder)
    dest = _path("dest", dest, default_src)
    if dest.exists() and not dest.is_dir():
        raise ValueError(f"dest={str(dest)!r} exists and is not a folder; the CIFAR-10 files go into a folder")
    manifest = read_manifest(folder)
    bad = _problems(folder, manifest)
    missing = [n for n, why in bad.items() if why == "missing"]
    damaged = {n: why for n, why in bad.items() if why != "missing"}
    if missing:
        also = f" (and damaged: {damaged})" if damaged else ""
        raise FileNotFoundError(
            f"{len(missing)} of {len(manifest['parts'])} parts missing in {folder}: {missing}{also}. "
            f"The device machine was probably given back between calls (it keeps carried files only "
            f"while it stays warm, 30 s after a call): re-send them, each carried with "
            f"{MANIFEST}, in calls made back to back")
    if damaged:
        raise ValueError(f"damaged parts in {folder}: {damaged}; re-send them (or re-run "
                         f"`python scripts/stage.py pack` if the manifest is stale)")

    todo = [f for f in manifest["files"]
            if not ((dest / f["name"]).is_file() and (dest / f["name"]).stat().st_size == f["bytes"]
                    and file_digest(dest / f["name"], "md5") == f["md5"])]
    if not todo:
        return dest
    wanted = {f["name"] for f in todo}
    dest.mkdir(parents=True, exist_ok=True)

    queue = list(manifest["files"])  # files still to rebuild, in stream order
    cur = bytearray()                 # the bytes of queue[0] so far (kept only if wanted)
    seen = 0                          # how many bytes of queue[0] the stream has given

    def finish_done() -> None:
        nonlocal seen
        while queue and seen == queue[0]["bytes"]:
            f = queue.pop(0)
            if f["name"] in wanted:
                digest = hashlib.md5(cur).hexdigest()
                if digest != f["md5"]:
                    raise ValueError(f"{f['name']} rebuilt from {folder} has md5 {digest}, the manifest "
                                     f"says {f['md5']}; re-run `python scripts/stage.py pack` and re-send "
                                     f"the parts")
                atomic_write_bytes(dest / f["name"], cur)
            cur.clear()
            seen = 0

    def feed(data: bytes) -> None:
        nonlocal seen
        view = memoryview(data)
        finish_done()
        while view.nbytes:
            if not queue:
                raise ValueError(f"the parts in {folder} decompress to more than the manifest's "
                                 f"{manifest['total_bytes']} bytes")
            take = min(queue[0]["bytes"] - seen, view.nbytes)
            if queue[0]["name"] in wanted:
                cur.extend(view[:take])
            seen += take
            view = view[take:]
            finish_done()

    dec = zlib.decompressobj(_GZIP)
    for part in manifest["parts"]:
        with open(folder / part["name"], "rb") as fh:
            for block in iter(lambda: fh.read(CHUNK), b""):
                feed(dec.decompress(block))
    feed(dec.flush())
    if not dec.eof or dec.unused_data or queue:
        raise ValueError(f"the parts in {folder} do not decompress to the manifest's files "
                         f"(stream ended={dec.eof}, files left={[f['name'] for f in queue]})")
    return dest


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------
def _rel(path: Path) -> str:
    """``path`` relative to the repository root (the form `carry` takes), else absolute."""
    p = Path(os.path.abspath(path))
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _table(folder: Path, manifest: dict, bad: dict[str, str] | None = None) -> None:
    print(f"  {'part':28s} {'MB':>7s}  sha256[:12]" + ("   state" if bad is not None else ""))
    for p in manifest["parts"]:
        state = f"   {bad.get(p['name'], 'ok')}" if bad is not None else ""
        print(f"  {p['name']:28s} {p['bytes'] / 1e6:7.2f}  {p['sha256'][:12]}{state}")


def _print_calls(folder: Path, manifest: dict | None, notebooks: list[str] | None = None) -> None:
    """The carry list of each device call: one per CIFAR-10 part (none when the chapters read only
    MNIST: ``manifest`` None), MNIST and the wheels with the calls that have room."""
    tree = tree_bytes()
    man = folder / MANIFEST
    calls = [{"carry": [_rel(man), _rel(folder / p["name"])], "bytes": man.stat().st_size + p["bytes"]}
             for p in manifest["parts"]] if manifest else [{"carry": [], "bytes": 0}]
    extras = [folder / "MNIST"]  # MNIST raw files (make stage), and wheels if any (device README)
    if any((ROOT / ".whl").glob("*.whl")):
        extras.append(ROOT / ".whl")
    budget = CALL_BYTES - (tree or 0)
    # largest first, each with the call that has the most room left (the wheels with the last,
    # smallest part), or in a call of its own before them when no call has room for it
    for path in sorted((e for e in extras if e.exists()), key=_size, reverse=True):
        call = min(reversed(calls), key=lambda c: c["bytes"])
        if call["bytes"] and call["bytes"] + _size(path) > budget:
            call = {"carry": [], "bytes": 0}
            calls.insert(0, call)
        call["carry"].append(_rel(path))
        call["bytes"] += _size(path)
    tree_txt = f"{tree / 1e6:.1f} MB" if tree is not None else "unknown size"
    print(f"device calls, back to back (each also sends the working tree, {tree_txt}; "
          f"at most {CALL_BYTES / 1e6:.1f} MB per call in all):")
    for k, c in enumerate(calls, 1):
        run = "bash scripts/gpu_full.sh" + (f" --notebooks {' '.join(notebooks)}" if notebooks else "")
        last = (f"   command: {run}" if k == len(calls)
                else f"   command: python3 scripts/stage.py check --folder {_rel(folder)} || true")
        warn = "   TOO BIG for one call" if c["bytes"] > budget else ""
        print(f"  call {k}: carry {json.dumps(c['carry'])}  ({c['bytes'] / 1e6:.1f} MB){warn}{last}")
    if not (folder / "MNIST").exists():
        print(f"  (no {_rel(folder / 'MNIST')}: `make stage` copies MNIST there; without it the "
              f"machine has no MNIST)")
    print("  Chain the calls without pausing: the machine is given back 30 s after a call, and with "
          "it the parts already sent.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python scripts/stage.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("verb", choices=["pack", "check", "unpack"])
    ap.add_argument("--src", type=Path, help="pack: the CIFAR-10 folder (default: data/cifar-10-batches-py)")
    ap.add_argument("--out", type=Path, help="pack: where the parts go (default: data/gpu)")
    ap.add_argument("--folder", type=Path, help="check/unpack: where the parts are (default: data/gpu)")
    ap.add_argument("--dest", type=Path, help="unpack: where the files go (default: data/cifar-10-batches-py)")
    ap.add_argument("--part-bytes", type=int, default=None,
                    help=f"pack: the most bytes per part (default: what the working tree leaves of a "
                         f"{CALL_BYTES:_}-byte call, at most {PART_BYTES:_})")
    ap.add_argument("--notebooks", nargs="+", default=None,
                    help="pack: only what these chapters read (e.g. 04: MNIST alone, no CIFAR-10 parts)")
    args = ap.parse_args(argv)
    try:
        if args.verb == "pack":
            folder = args.out if args.out is not None else default_folder()
            if args.notebooks:
                from nrbook import budget

                needs = {d for nb in budget._pick(args.notebooks) for d in budget.datasets(nb)}
                if "cifar10" not in needs:
                    for old in folder.glob("cifar10.*"):      # no stale parts ride along
                        old.unlink()
                    print(f"stage: chapters {args.notebooks} read {sorted(needs)}: no CIFAR-10 parts")
                    _print_calls(folder, None, args.notebooks)
                    return 0
            manifest = pack(args.src, folder, args.part_bytes)
            print(f"stage: {manifest['total_bytes'] / 1e6:.1f} MB in {len(manifest['files'])} files -> "
                  f"{manifest['compressed_bytes'] / 1e6:.1f} MB in {len(manifest['parts'])} parts "
                  f"in {_rel(folder)}:")
            _table(folder, manifest)
            _print_calls(folder, manifest, args.notebooks)
        elif args.verb == "check":
            folder = args.folder if args.folder is not None else default_folder()
            manifest = read_manifest(folder)
            bad = _problems(folder, manifest)
            print(f"stage: {_rel(folder)}: {len(manifest['parts']) - len(bad)} of "
                  f"{len(manifest['parts'])} parts intact")
            _table(folder, manifest, bad)
            if bad:
                print(f"stage: ERROR: parts missing or damaged: {list(bad)}", file=sys.stderr)
                return 1
        else:
            dest = unpack(args.folder, args.dest)
            print(f"stage: CIFAR-10 rebuilt and md5-checked in {_rel(dest)}")
    except (FileNotFoundError, ValueError) as e:
        print(f"stage: ERROR: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
