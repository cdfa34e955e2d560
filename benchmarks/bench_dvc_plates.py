"""DVC per plate: pinning, pushing and pulling ONE plate when 1, 10 or 50 plates are pinned.

Run ``python benchmarks/bench_dvc_plates.py [--counts 1 10 50] [--remote s3|local]`` from the
repository root.  For each count N it builds a fresh git + DVC repository whose remote is a
moto S3 server on loopback (``--remote s3``, the default when moto is installed; the same
server the tests use, ``tests/s3_server.py``) or a local folder, pins and pushes N-1 synthetic
plates (not timed), then times, for one new plate:

``add``   ``cellscape pin``'s library call (:func:`~assets_pkg.core.store.dvc.pin_plates`):
          ``dvc add`` of the plate, the index rewritten, ``dvc commit data.dvc``;
``push``  ``dvc push`` of the plate's pin and ``data.dvc``;
``pull``  in a fresh ``git clone``: ``dvc pull data/plates/<plate>``.

With ``--legacy`` it times the earlier layout too (one ``data.dvc`` over ``data/``): ``dvc add
data``, ``dvc push data.dvc`` and, in a fresh clone, ``dvc pull data/plates/<plate>`` (DVC's
granular pull inside a tracked folder).  It prints a table and the ratio of each step at the
largest count to the smallest, measured in one run (compare ratios, not absolute seconds,
across machines).  A synthetic plate is ``--files`` files of ``--kib`` KiB of random bytes
(DVC hashes bytes; it does not look inside TIFFs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # the moto server helper the tests use

from assets_pkg.core.store.dvc import dvc_executable, pin_plates, run_dvc  # noqa: E402

GITIGNORE = "/data/**\n!/data/**/\n!/data/**/*.dvc\n!/data/**/.gitignore\n"
GIT = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]


def sh(cwd: Path, *args: str) -> None:
    proc = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{args} failed: {proc.stderr or proc.stdout}")


def make_plate(plates: Path, name: str, files: int, kib: int, seed: int) -> Path:
    d = plates / name
    d.mkdir(parents=True)
    rng = __import__("random").Random(seed)
    for i in range(files):
        (d / f"A{i // 2:02d}_f{i % 2:02d}_protein.tif").write_bytes(rng.randbytes(kib * 1024))
    return d


def new_repo(root: Path, remote_url: str, endpoint: str | None) -> None:
    root.mkdir(parents=True)
    sh(root, "git", "init", "-q")
    (root / ".gitignore").write_text(GITIGNORE)
    sh(root, dvc_executable(), "init", "-q")
    sh(root, dvc_executable(), "remote", "add", "-d", "store", remote_url)
    if endpoint:
        sh(root, dvc_executable(), "remote", "modify", "store", "endpointurl", endpoint)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def per_plate(n: int, work: Path, remote_url: str, endpoint: str | None, files: int, kib: int) -> dict:
    root = work / f"per-plate-{n}"
    new_repo(root, remote_url + f"/per-plate-{n}", endpoint)
    plates = root / "data" / "plates"
    plates.mkdir(parents=True)
    old = [make_plate(plates, f"plate{i:03d}", files, kib, i) for i in range(n - 1)]
    if old:
        pin_plates(old, push=True)
    sh(root, *GIT, "add", "-A")
    sh(root, *GIT, "commit", "-q", "-m", "pinned plates", "--allow-empty")
    new = make_plate(plates, "plate999", files, kib, 999)
    t_add = timed(lambda: pin_plates([new]))
    t_push = timed(lambda: run_dvc(["push", "data/plates/plate999.dvc", "data.dvc"], root))
    sh(root, *GIT, "add", "-A")
    sh(root, *GIT, "commit", "-q", "-m", "one more plate")
    clone = work / f"per-plate-{n}-clone"
    sh(work, "git", "clone", "-q", str(root), str(clone))
    t_pull = timed(lambda: run_dvc(["pull", "data/plates/plate999"], clone))
    got = sorted(p.name for p in (clone / "data" / "plates").iterdir() if p.is_dir())
    assert got == ["plate999"], got
    return {"add": t_add, "push": t_push, "pull": t_pull}


def legacy(n: int, work: Path, remote_url: str, endpoint: str | None, files: int, kib: int) -> dict:
    root = work / f"legacy-{n}"
    new_repo(root, remote_url + f"/legacy-{n}", endpoint)
    plates = root / "data" / "plates"
    plates.mkdir(parents=True)
    for i in range(n - 1):
        make_plate(plates, f"plate{i:03d}", files, kib, i)
    if n > 1:
        run_dvc(["add", "data"], root)
        run_dvc(["push", "data.dvc"], root)
    sh(root, *GIT, "add", "-A")
    sh(root, *GIT, "commit", "-q", "-m", "pinned plates", "--allow-empty")
    make_plate(plates, "plate999", files, kib, 999)
    t_add = timed(lambda: run_dvc(["add", "data"], root))
    t_push = timed(lambda: run_dvc(["push", "data.dvc"], root))
    sh(root, *GIT, "add", "-A")
    sh(root, *GIT, "commit", "-q", "-m", "one more plate")
    clone = work / f"legacy-{n}-clone"
    sh(work, "git", "clone", "-q", str(root), str(clone))
    t_pull = timed(lambda: run_dvc(["pull", "data/plates/plate999"], clone))
    return {"add": t_add, "push": t_push, "pull": t_pull}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--files", type=int, default=24, help="files per synthetic plate")
    ap.add_argument("--kib", type=int, default=64, help="KiB per file")
    ap.add_argument("--remote", choices=["s3", "local"], default=None, help="default: s3 when moto is installed")
    ap.add_argument("--legacy", action="store_true", help="also time one data.dvc over data/ (the earlier layout)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    a = ap.parse_args()

    from s3_server import moto_available, running_s3

    kind = a.remote or ("s3" if moto_available() else "local")
    with ExitStack() as stack:
        work = a.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-dvc-")))
        if kind == "s3":
            server = stack.enter_context(running_s3())
            os.environ.update(server.env())
            bucket = server.create_bucket("bench")
            remote_url, endpoint = f"s3://{bucket}/dvc", server.endpoint
        else:
            remote_url, endpoint = str(work / "remote"), None
        print(f"remote: {kind}; a plate = {a.files} files x {a.kib} KiB; one new plate pinned, pushed, pulled")
        layouts = [("per plate", per_plate)] + ([("legacy data.dvc", legacy)] if a.legacy else [])
        rows = []
        for name, fn in layouts:
            for n in a.counts:
                r = fn(n, work, remote_url, endpoint, a.files, a.kib)
                rows.append((name, n, r))
                print(f"  {name:16s} {n:4d} pinned: add {r['add']:6.2f} s  push {r['push']:6.2f} s  "
                      f"pull {r['pull']:6.2f} s", flush=True)
        print()
        print(f"{'layout':16s} {'pinned':>6s} {'add s':>7s} {'push s':>7s} {'pull s':>7s} {'total s':>8s}")
        for name, n, r in rows:
            print(f"{name:16s} {n:6d} {r['add']:7.2f} {r['push']:7.2f} {r['pull']:7.2f} {sum(r.values()):8.2f}")
        lo, hi = min(a.counts), max(a.counts)
        for name, _ in layouts:
            by_n = {n: r for nm, n, r in rows if nm == name}
            ratios = "  ".join(f"{k} {by_n[hi][k] / by_n[lo][k]:.2f}" for k in ("add", "push", "pull"))
            total = sum(by_n[hi].values()) / sum(by_n[lo].values())
            print(f"{name}: {hi}-vs-{lo} ratio  {ratios}  total {total:.2f}")
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
