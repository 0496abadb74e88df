"""``imharmony voxelwise``: a real Dask cluster, and clear errors that write nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import imharmony
from _support.voxel_stack import AFFINE, SHAPE, make_stack
from imharmony.cli import main


def run(*args: str) -> int:
    return main(["-q", *args])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("voxelwise")
    s = make_stack(root / "train", n=15)
    code = run("voxelwise", "fit", str(s["manifest"]), "--mask", str(s["mask"]), "--batch",
               "site", "--covariate", "age", "--model", str(root / "model"), "--output-dir",
               str(root / "out"))
    assert code == 0
    new = make_stack(root / "new", n=6, seed=2)
    return {"root": root, "train": s, "new": new, "model": root / "model"}


def _cluster(tmp: Path) -> tuple[str, list[subprocess.Popen]]:
    """A `dask scheduler` and two `dask worker` processes on the loopback interface."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(imharmony.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    sched_file = tmp / "scheduler.json"
    procs = [subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    deadline = time.monotonic() + 60
    while not sched_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    address = json.loads(sched_file.read_text())["address"]
    for _ in range(2):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", address, "--host",
             "127.0.0.1", "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
             "--memory-limit", "1GiB", "--local-directory", str(tmp)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    from distributed import Client

    with Client(address, timeout="60s") as client:
        client.wait_for_workers(2, timeout=60)
    return address, procs


def test_voxelwise_and_images_on_a_real_cluster_match_the_local_run(fitted: dict,
                                                                    tmp_path: Path,
                                                                    monkeypatch) -> None:
    from imharmony.scale import voxelwise

    # a site's sums pass between the two workers (2 images per task, 5 per site)
    monkeypatch.setattr(voxelwise, "_rows_per_task", lambda V: 2)
    new, train = fitted["new"], fitted["train"]
    assert run("voxelwise", "apply", str(new["manifest"]), "--model", str(fitted["model"]),
               "--output-dir", str(tmp_path / "local")) == 0
    images = new["root"] / "images.csv"
    new["table"].rename(columns={"image": "path"}).to_csv(images, index=False)
    assert run("images", str(images), "--normalize", "zscore", "--ignore-column", "age",
               "--output-dir", str(tmp_path / "images_local")) == 0
    address, procs = _cluster(tmp_path)
    try:
        assert address.startswith("tcp://127.0.0.1:")
        assert run("voxelwise", "apply", str(new["manifest"]), "--model", str(fitted["model"]),
                   "--output-dir", str(tmp_path / "cluster"), "--scheduler", address) == 0
        assert run("images", str(images), "--normalize", "zscore", "--ignore-column", "age",
                   "--output-dir", str(tmp_path / "images_cluster"), "--scheduler", address) == 0
        assert run("voxelwise", "fit", str(train["manifest"]), "--mask", str(train["mask"]),
                   "--batch", "site", "--covariate", "age", "--model", str(tmp_path / "model"),
                   "--output-dir", str(tmp_path / "fit_cluster"), "--scheduler", address) == 0
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    for rel in new["table"]["image"]:
        name = Path(rel).name
        a = nib.load(tmp_path / "local" / name).get_fdata()
        b = nib.load(tmp_path / "cluster" / name).get_fdata()
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, nib.load(new["root"] / rel).get_fdata())
    for rel in train["table"]["image"]:  # the fit's sums, in the same order on any cluster
        name = Path(rel).name
        np.testing.assert_array_equal(nib.load(tmp_path / "fit_cluster" / name).get_fdata(),
                                      nib.load(fitted["root"] / "out" / name).get_fdata())
    with (np.load(next(fitted["model"].glob("model.*.npz"))) as local,
          np.load(next((tmp_path / "model").glob("model.*.npz"))) as cluster):
        assert local.files == cluster.files
        for key in local.files:
            np.testing.assert_array_equal(local[key], cluster[key], err_msg=key)
    summary = pd.read_csv(tmp_path / "images_cluster" / "summary.csv")
    assert list(summary["status"]) == ["done"] * len(new["table"])
    for name in summary["output"]:
        a = nib.load(tmp_path / "images_local" / Path(name).name).get_fdata()
        b = nib.load(tmp_path / "images_cluster" / Path(name).name).get_fdata()
        np.testing.assert_array_equal(a, b)
        assert abs(a.mean()) < 1e-3  # z-scored: really processed


def test_malformed_scheduler_address_is_a_clear_error(fitted: dict, tmp_path: Path,
                                                       capsys) -> None:
    code = run("voxelwise", "apply", str(fitted["new"]["manifest"]), "--model",
               str(fitted["model"]), "--output-dir", str(tmp_path / "o"), "--scheduler",
               "127.0.0.1:8786")
    assert code == 2
    assert "'127.0.0.1:8786' is not a scheduler address" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _expect_error(tmp_path: Path, capsys, args: list[str], *fragments: str) -> None:
    code = run(*args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in " ".join(err.split()), err
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "model").exists()


def test_mask_on_another_grid_is_refused(tmp_path: Path, capsys) -> None:
    s = make_stack(tmp_path / "d", n=6)
    shifted = AFFINE.copy()
    shifted[0, 3] = 5.0
    mask = np.asanyarray(nib.load(s["mask"]).dataobj)
    nib.save(nib.Nifti1Image(mask, shifted), tmp_path / "other_mask.nii.gz")
    _expect_error(tmp_path, capsys, [
        "voxelwise", "fit", str(s["manifest"]), "--mask", str(tmp_path / "other_mask.nii.gz"),
        "--batch", "site", "--model", str(tmp_path / "model"), "--output-dir",
        str(tmp_path / "out")], "s0_00.nii.gz: its grid differs from the mask's", "origin")


def test_image_of_another_shape_is_refused(tmp_path: Path, capsys) -> None:
    s = make_stack(tmp_path / "d", n=6)
    bad = s["root"] / "images" / "s0_03.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((SHAPE[0], SHAPE[1], SHAPE[2] + 1), np.float32), AFFINE),
             bad)
    _expect_error(tmp_path, capsys, [
        "voxelwise", "fit", str(s["manifest"]), "--mask", str(s["mask"]), "--batch", "site",
        "--model", str(tmp_path / "model"), "--output-dir", str(tmp_path / "out")],
        "s0_03.nii.gz: image shape (6, 7, 6) differs from the mask's (6, 7, 5)")


def test_site_unseen_at_apply_is_refused(fitted: dict, tmp_path: Path, capsys) -> None:
    new = fitted["new"]
    table = pd.read_csv(new["manifest"])
    table.loc[2, "site"] = "z"
    table.to_csv(new["root"] / "unseen.csv", index=False)
    code = run("voxelwise", "apply", str(new["root"] / "unseen.csv"), "--model",
               str(fitted["model"]), "--output-dir", str(tmp_path / "out"))
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "site(s) 'z' were not seen" in err
    assert not (tmp_path / "out").exists()


def test_a_killed_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    from imharmony.scale.voxelwise import WORK_NAME, fit_voxelwise

    s = make_stack(tmp_path / "d", n=12)
    out, model = tmp_path / "out", tmp_path / "model"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(imharmony.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    args = ["voxelwise", "fit", str(s["manifest"]), "--mask", str(s["mask"]), "--batch", "site",
            "--covariate", "age", "--model", str(model), "--output-dir", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "imharmony.cli", "-q", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    markers = [out / WORK_NAME / "done" / f"sums-{j}" for j in range(3)]  # every site's sums
    deadline = time.monotonic() + 120
    while (not all(m.exists() for m in markers) and proc.poll() is None
           and time.monotonic() < deadline):
        time.sleep(0.005)
    proc.kill()  # SIGKILL: no clean-up runs
    _, err = proc.communicate(timeout=30)
    assert all(m.exists() for m in markers) and (out / WORK_NAME).is_dir(), (
        f"the run ended first: {err[-500:]}")
    calls: list[tuple[str, int, int]] = []
    fit_voxelwise(s["manifest"], mask=s["mask"], batch="site", covariates=["age"],
                  model_dir=model, output_dir=out, progress=lambda *a: calls.append(a))
    assert calls[0] == ("read", 12, 12)  # nothing read again
    assert not (out / WORK_NAME).exists()
    expected = tmp_path / "clean"
    assert run(*args[:-1], str(expected)) == 0
    for rel in s["table"]["image"]:
        name = Path(rel).name
        np.testing.assert_array_equal(nib.load(out / name).get_fdata(),
                                      nib.load(expected / name).get_fdata())


def test_a_tampered_model_exits_2_naming_the_field(fitted: dict, tmp_path: Path,
                                                   capsys) -> None:
    import shutil

    model = tmp_path / "model"
    shutil.copytree(fitted["model"], model)
    npz = next(model.glob("model.*.npz"))
    raw = bytearray(npz.read_bytes())
    raw[len(raw) // 2] ^= 0x10  # one bit of a per-voxel estimate
    npz.write_bytes(bytes(raw))
    code = run("voxelwise", "apply", str(fitted["new"]["manifest"]), "--model", str(model),
               "--output-dir", str(tmp_path / "out"))
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert "checksum does not match model.json" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
