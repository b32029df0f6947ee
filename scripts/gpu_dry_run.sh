#!/usr/bin/env bash
# A dry run of one loan, here on the CPU: the path scripts/gpu_full.sh takes on an offline GPU
# machine, at the `smoke` profile's sizes, before a loan spends its minutes on it.
#
#   bash scripts/gpu_dry_run.sh [NN]        (make gpu-dry-run NB=05; default chapter 05)
#
# 1. copies the working tree as a device call sends it (tracked files and untracked ones git does
#    not ignore) into a temporary folder: no datasets, no checkpoints, no virtual environment;
# 2. stages what the chapter reads as `make stage NB=NN` does (scripts/stage.py pack --notebooks:
#    CIFAR-10 in checksummed parts, MNIST copied), and checks that each call's carry, with the tree,
#    stays under the 64 MiB a call takes;
# 3. runs scripts/gpu_full.sh --notebooks NN there with PROFILE=smoke (same code, tiny sizes; --force,
#    since the copy's book/ holds the committed cpu run, which a smoke run would otherwise keep): it
#    rebuilds CIFAR-10 from its parts and checks every md5, trains the chapter's models from scratch,
#    executes the chapter under the time budget and packs what comes back into $OUT;
# 4. checks what came back: at most 8 files of at most 16 MiB, plain names, the executed notebook,
#    the results JSON at the profile asked for, and the log with the device line.
# The repository's own book/ and data/ are not touched. Exit status 0 when every check holds.
set -euo pipefail
cd "$(dirname "$0")/.."
NB="${1:-05}"
PY="${PY:-$PWD/.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"
SRC_DATA="$("$PY" -c 'from nrlib.data import data_root; print(data_root())')"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
repo="$tmp/repo" out="$tmp/out"
mkdir -p "$repo" "$out"
fail() { echo "gpu_dry_run: FAILED: $*" >&2; exit 1; }

# 1. the tree a device call carries
git ls-files -z -co --exclude-standard | tar --null -T - --ignore-failed-read -cf - 2>/dev/null \
  | tar -C "$repo" -xf -
# the tree's bytes and the part size it leaves, measured here (the copy is not a git checkout)
read -r tree_bytes part_bytes < <("$PY" -c 'from nrbook import budget; print(budget.tree_bytes(), budget.part_bytes())')

# 2. the staging, from this machine's datasets, into the copy's data/gpu
mkdir -p "$repo/data/gpu"
needs="$(cd "$repo" && "$PY" -m nrbook.budget --datasets --notebooks "$NB")"
echo "gpu_dry_run: chapter $NB reads: $needs; the tree is $((tree_bytes / 1000000)) MB"
if [[ " $needs " == *" mnist "* ]]; then
  mkdir -p "$repo/data/gpu/MNIST/raw"
  cp -L "$SRC_DATA"/MNIST/raw/*.gz "$repo/data/gpu/MNIST/raw/"
fi
(cd "$repo" && NRLIB_DATA="$repo/data" "$PY" scripts/stage.py pack --src "$SRC_DATA/cifar-10-batches-py" \
   --out data/gpu --notebooks "$NB" --part-bytes "$part_bytes") | tee "$tmp/stage.txt"
limit=$((64 * 1024 * 1024))
while read -r mb; do
  call=$(python3 -c "print(int(float('$mb') * 1e6))")
  [ $((call + tree_bytes)) -le $limit ] || fail "a call carries ${mb} MB besides the tree: over 64 MiB"
done < <(sed -n 's/.*call [0-9]*: carry .*(\([0-9.]*\) MB).*/\1/p' "$tmp/stage.txt")
grep -q "TOO BIG" "$tmp/stage.txt" && fail "stage.py marks a call TOO BIG"

# 3. the run, as on the machine: the repository root on PYTHONPATH, no install, no datasets but the
# staged ones, no checkpoints
t0=$(date +%s)
rc=0
(cd "$repo" && env -u NRLIB_DATA OUT="$out" PY="$PY" PROFILE=smoke BUDGET_S="${BUDGET_S:-570}" \
   bash scripts/gpu_full.sh --notebooks "$NB" --force) > "$tmp/run.txt" 2>&1 || rc=$?
tail -n 5 "$tmp/run.txt"
[ "$rc" -eq 0 ] || fail "gpu_full.sh exited $rc (log: $(tail -n 20 "$tmp/run.txt"))"

# 4. what comes back
n=$(find "$out" -type f | wc -l)
[ "$n" -le 8 ] || fail "$n files in \$OUT, at most 8 come back"
while IFS= read -r f; do
  b=$(basename "$f")
  [[ "$b" =~ ^[A-Za-z0-9._-]+$ ]] || fail "$b: a name that does not come back"
  [ "$(stat -c %s "$f")" -le $((16 * 1024 * 1024)) ] || fail "$b is over 16 MiB"
done < <(find "$out" -type f)
grep -q "^device:" "$out/full.log" || fail "no device line in full.log"
ls "$out"/book__"$NB"_*.ipynb >/dev/null 2>&1 || fail "no executed notebook came back"
res=$(ls "$out"/data__results__"$NB"_*__smoke.json 2>/dev/null | head -n 1)
[ -n "$res" ] || fail "no results JSON came back"
"$PY" - "$res" <<'EOF' || fail "the results JSON is not a smoke run's"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["profile"] == "smoke" and r["metrics"] and r["seconds"], r.get("profile")
print(f"gpu_dry_run: {r['notebook']} at {r['profile']}: {len(r['metrics'])} metrics, "
      f"stages {', '.join(f'{k} {v:.0f} s' for k, v in r['seconds'].items())}")
EOF
echo "gpu_dry_run: OK: chapter $NB staged, run and packed in $(( $(date +%s) - t0 )) s; back: $(ls "$out" | tr '\n' ' ')"
