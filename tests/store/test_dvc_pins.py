"""DVC pins: one ``.dvc`` per plate and the dataset index pinned by ``data.dvc`` (``cellscape pin``),
the conversion of a ``data.dvc`` that pinned all of ``data/``, and a DVC remote on S3 (moto):
``dvc push``, then ``dvc pull`` of one plate in a fresh git clone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from assets_pkg.cli import main
from assets_pkg.core.store import dvc as dvc_mod
from assets_pkg.core.store.dvc import dataset_md5, dataset_pin, dvc_file_for, pin_plates, pinned_md5

DVC = str(Path(sys.executable).parent / "dvc")


def run(cwd: Path, *args: str) -> str:
    proc = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{args}: {proc.stderr or proc.stdout}"
    return proc.stdout


def make_plate(plates: Path, name: str, seed: int) -> Path:
    """A folder of a few small files standing for a plate (DVC does not look inside)."""
    d = plates / name
    d.mkdir(parents=True)
    for i in range(3):
        (d / f"A0{i}_f00_nucleus.tif").write_bytes(os.urandom(64) + bytes([seed, i]))
    (d / "plate.json").write_text(f'{{"plate_id": "{name}"}}')
    return d


@pytest.fixture
def repo(tmp_path):
    """A DVC repository (no git) with three plate folders under data/plates/."""
    root = tmp_path / "repo"
    root.mkdir()
    run(root, DVC, "init", "--no-scm", "-q")
    for i in (1, 2, 3):
        make_plate(root / "data" / "plates", f"plate0{i}", i)
    return root


def test_pin_writes_one_dvc_per_plate_and_the_index_and_adds_only_the_plates_given(repo, capsys, monkeypatch):
    plates = repo / "data" / "plates"
    p1, p2, p3 = (plates / f"plate0{i}" for i in (1, 2, 3))
    assert main(["pin", str(p1), str(p2)]) == 0
    out = capsys.readouterr().out
    assert sorted(f.name for f in plates.glob("*.dvc")) == ["plate01.dvc", "plate02.dvc"]
    index = yaml.safe_load((repo / "data" / "plates.yaml").read_text())["plates"]
    assert sorted(index) == ["plate01", "plate02"] and index["plate01"]["md5"].endswith(".dir")
    doc = yaml.safe_load((repo / "data.dvc").read_text())
    assert [o["path"] for o in doc["outs"]] == ["data/plates.yaml"]
    md5 = dataset_md5(repo / "data.dvc")
    assert f"dataset: {md5}" in out and f"plate01: {index['plate01']['md5']}" in out

    # each plate is pinned by its own file; the plates folder as a whole by none
    assert dvc_file_for(p1) == p1.parent / "plate01.dvc" and dvc_file_for(p1 / "plate.json") == plates / "plate01.dvc"
    assert dvc_file_for(plates) is None and dvc_file_for(p3) is None
    assert pinned_md5(p1) == (index["plate01"]["md5"], "pinned")
    assert dataset_pin([p1, p2, p3]) == (None, "plates ['plate03'] have no .dvc file (run cellscape pin on them)")

    # a third plate: DVC adds only it; the other pins stay as they were
    before = {f: f.read_bytes() for f in plates.glob("*.dvc")}
    calls = []
    real = dvc_mod._dvc
    monkeypatch.setattr(dvc_mod, "_dvc", lambda args, root, check=True: calls.append(args) or real(args, root, check))
    res = pin_plates([p3])
    assert [c for c in calls if c[0] == "add"] == [["add", "data/plates/plate03"]]
    assert {f: f.read_bytes() for f in before} == before
    assert res.plates == {"plate03": yaml.safe_load((plates / "plate03.dvc").read_text())["outs"][0]["md5"]}
    assert res.dataset_md5 == dataset_md5(repo / "data.dvc") != md5
    assert dataset_pin([p1, p2, p3]) == (res.dataset_md5, "pinned")

    # a changed file is noticed
    (p2 / "A00_f00_nucleus.tif").write_bytes(b"changed")
    md5_now, why = dataset_pin([p1, p2, p3])
    assert md5_now is None and "changed on disk" in why and "plate02" in why


def test_a_data_dvc_pinning_all_of_data_is_converted_to_per_plate_pins(repo):
    run(repo, DVC, "add", "-q", "data")
    p1 = repo / "data" / "plates" / "plate01"
    assert dvc_file_for(p1) == repo / "data.dvc"  # the earlier layout still resolves
    assert dataset_pin([p1])[0] == dataset_md5(repo / "data.dvc")
    res = pin_plates([p1])
    assert res.converted and sorted(res.plates) == ["plate01", "plate02", "plate03"]
    assert [o["path"] for o in yaml.safe_load((repo / "data.dvc").read_text())["outs"]] == ["data/plates.yaml"]
    assert dvc_file_for(p1) == p1.parent / "plate01.dvc"
    assert run(repo, DVC, "status", "--json").strip() == "{}"
    assert dataset_pin(res.plates and [p1.parent / p for p in res.plates])[0] == res.dataset_md5


def test_dvc_remote_on_s3_push_then_a_fresh_clone_pulls_one_plate(s3, repo, tmp_path):
    shutil.rmtree(repo / ".dvc")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    run(repo, "git", "init", "-q")
    (repo / ".gitignore").write_text("/data/**\n!/data/**/\n!/data/**/*.dvc\n!/data/**/.gitignore\n")
    run(repo, DVC, "init", "-q")
    bucket = s3.create_bucket("dvc")
    run(repo, DVC, "remote", "add", "-d", "objects", f"s3://{bucket}/cellscape")
    run(repo, DVC, "remote", "modify", "objects", "endpointurl", s3.endpoint)
    plates = repo / "data" / "plates"
    res = pin_plates([plates / "plate01", plates / "plate02"], push=True)
    assert res.pushed
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix="cellscape/")
    assert listed["KeyCount"] >= 3 + 3 + 2 + 1  # files of both plates, their .dir objects, the index
    run(repo, *git, "add", "-A")
    run(repo, *git, "commit", "-q", "-m", "pin two plates")

    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    assert sorted(p.name for p in (clone / "data" / "plates").iterdir()) == [
        ".gitignore", "plate01.dvc", "plate02.dvc"]
    run(clone, DVC, "pull", "-q", "data/plates/plate01")
    got = clone / "data" / "plates"
    assert (got / "plate01").is_dir() and not (got / "plate02").exists()
    for f in (plates / "plate01").iterdir():
        assert (got / "plate01" / f.name).read_bytes() == f.read_bytes()
    run(clone, DVC, "pull", "-q", "data.dvc", "data/plates/plate02.dvc")
    assert (got / "plate02").is_dir() and (clone / "data" / "plates.yaml").is_file()
    assert dataset_pin([got / "plate01", got / "plate02"]) == (res.dataset_md5, "pinned")
