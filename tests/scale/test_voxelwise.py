"""Voxel-wise ComBat of image stacks (imharmony.scale.voxelwise): parity, geometry, resume."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import imharmony as ih
from _support.voxel_stack import make_stack, stacked
from imharmony.errors import HarmonizationWarning
from imharmony.scale import voxelwise
from imharmony.scale.voxelwise import WORK_NAME, apply_voxelwise, fit_voxelwise


class Interrupt(Exception):
    """Stands for the run being stopped from outside at a given point."""


def _outputs(out: Path, table, mask_path: Path) -> np.ndarray:
    return stacked(out, table.assign(image=[Path(p).name for p in table["image"]]), mask_path)


@pytest.fixture(params=[True, False], ids=["moments in memory", "moments stored"])
def moments_in_memory(request, monkeypatch) -> bool:
    """Both places of the per-voxel moments (the cluster's memory, the work store), in blocks
    of 7 voxels."""
    if not request.param:
        monkeypatch.setattr(voxelwise, "_MOMENTS_IN_MEMORY", 0)
    monkeypatch.setattr(voxelwise, "_chunk_voxels", lambda n, V, limit: 7)
    return request.param


def test_fit_matches_in_memory_combat_and_keeps_geometry(tmp_path: Path, monkeypatch,
                                                         moments_in_memory: bool) -> None:
    # blocks of 7 voxels: the 60 voxels span 9 blocks, the last partial; the main process
    # streams per-voxel arrays 14 voxels at a time; 5 images per task; the per-voxel moments
    # in the cluster's memory or in the work store
    monkeypatch.setattr(voxelwise, "_STREAM_VOXELS", 14)
    monkeypatch.setattr(voxelwise, "_rows_per_task", lambda V: 5)
    s = make_stack(tmp_path / "data")
    out, model = tmp_path / "out", tmp_path / "model"
    result = fit_voxelwise(s["manifest"], mask=s["mask"], batch="site", covariates=["age"],
                           model_dir=model, output_dir=out)
    X = stacked(s["root"], s["table"], s["mask"])
    expected = ih.ComBat().fit_transform(X, batch=s["table"]["site"],
                                         covariates=s["table"][["age"]])
    got = _outputs(out, s["table"], s["mask"])
    # outputs are float32 like the inputs: equal to the in-memory result rounded to float32
    np.testing.assert_array_equal(got, expected.astype(np.float32).astype(np.float64))
    assert result["n_voxels"] == X.shape[1] == 60
    assert result["n_iter"] == [int(k) for k in ih.ComBat().fit(
        X, batch=s["table"]["site"], covariates=s["table"][["age"]]).fit_.n_iter]
    assert not (out / WORK_NAME).exists()
    mask = np.asanyarray(nib.load(s["mask"]).dataobj) != 0
    for rel in s["table"]["image"][:3]:
        src, dst = nib.load(s["root"] / rel), nib.load(out / Path(rel).name)
        np.testing.assert_array_equal(dst.affine, src.affine)
        assert dst.shape == src.shape
        np.testing.assert_array_equal(dst.get_fdata()[~mask], src.get_fdata()[~mask])
        assert not np.allclose(dst.get_fdata()[mask], src.get_fdata()[mask])


def test_apply_to_new_images_of_the_learned_sites(tmp_path: Path) -> None:
    train = make_stack(tmp_path / "train", n=18)
    new = make_stack(tmp_path / "new", n=6, seed=1)
    model = tmp_path / "model"
    fit_voxelwise(train["manifest"], mask=train["mask"], batch="site", covariates=["age"],
                  model_dir=model, output_dir=tmp_path / "out")
    apply_voxelwise(new["manifest"], model_dir=model, output_dir=tmp_path / "applied")
    X = stacked(train["root"], train["table"], train["mask"])
    ref = ih.ComBat().fit(X, batch=train["table"]["site"], covariates=train["table"][["age"]])
    Xn = stacked(new["root"], new["table"], new["mask"])
    expected = ref.transform(Xn, batch=new["table"]["site"], covariates=new["table"][["age"]])
    got = _outputs(tmp_path / "applied", new["table"], new["mask"])
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_an_interrupted_run_resumes_without_reading_again(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(voxelwise, "_rows_per_task", lambda V: 4)  # 18 images: 5 tasks
    s = make_stack(tmp_path / "data")
    out, model = tmp_path / "out", tmp_path / "model"
    calls: list[tuple[str, int, int]] = []

    def stop_while_writing(stage: str, done: int, total: int) -> None:
        calls.append((stage, done, total))
        if stage == "write" and done >= 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        fit_voxelwise(s["manifest"], mask=s["mask"], batch="site", covariates=["age"],
                      model_dir=model, output_dir=out, progress=stop_while_writing)
    markers = {p.name for p in (out / WORK_NAME / "done").iterdir()}
    assert {f"read-{i}" for i in range(18)} <= markers
    written = {m for m in markers if m.startswith("write-")}
    assert len(written) >= 3
    calls.clear()
    fit_voxelwise(s["manifest"], mask=s["mask"], batch="site", covariates=["age"],
                  model_dir=model, output_dir=out, progress=lambda *a: calls.append(a))
    assert calls[0] == ("read", 18, 18)  # every image was already in the store
    first_write = next(c for c in calls if c[0] == "write")
    assert first_write[1] == len(written)
    X = stacked(s["root"], s["table"], s["mask"])
    expected = ih.ComBat().fit_transform(X, batch=s["table"]["site"],
                                         covariates=s["table"][["age"]])
    np.testing.assert_array_equal(_outputs(out, s["table"], s["mask"]),
                                  expected.astype(np.float32).astype(np.float64))
    assert not (out / WORK_NAME).exists()



def test_an_interruption_after_the_moments_resumes_from_the_sums(
    tmp_path: Path, monkeypatch, moments_in_memory: bool
) -> None:
    # moments held in memory are lost with the run: computed again from the saved sums; stored
    # ones are read back; in both cases no image is read again before writing
    s = make_stack(tmp_path / "data")
    out, model = tmp_path / "out", tmp_path / "model"

    def stop_at_fit(stage: str, done: int, total: int) -> None:
        if stage == "fit":
            raise Interrupt

    with pytest.raises(Interrupt):
        fit_voxelwise(s["manifest"], mask=s["mask"], batch="site", covariates=["age"],
                      model_dir=model, output_dir=out, progress=stop_at_fit)
    work = out / WORK_NAME
    assert (work / "done" / "moments").exists() is not moments_in_memory
    assert (work / "sums-0.npy").exists() is moments_in_memory  # stored moments: sums dropped
    real = voxelwise._masked_values
    read: list[str] = []
    monkeypatch.setattr(voxelwise, "_masked_values", lambda p, m: read.append(Path(p).name)
                        or real(p, m))
    calls: list[tuple[str, int, int]] = []
    fit_voxelwise(s["manifest"], mask=s["mask"], batch="site", covariates=["age"],
                  model_dir=model, output_dir=out, progress=lambda *a: calls.append(a))
    assert calls[0] == ("read", 18, 18)
    writes = [c for c in calls if c[0] == "write"]
    assert writes[0][1] == 0 and writes[-1][1] == 18
    assert read == []  # no image read again into the sums (writing reads each file itself)
    X = stacked(s["root"], s["table"], s["mask"])
    expected = ih.ComBat().fit_transform(X, batch=s["table"]["site"],
                                         covariates=s["table"][["age"]])
    np.testing.assert_array_equal(_outputs(out, s["table"], s["mask"]),
                                  expected.astype(np.float32).astype(np.float64))


def test_a_failed_read_keeps_the_sums_of_the_sites_that_finished(tmp_path: Path,
                                                                 monkeypatch) -> None:
    monkeypatch.setattr(voxelwise, "_rows_per_task", lambda V: 2)  # 3 tasks per site
    s = make_stack(tmp_path / "data")
    out, model = tmp_path / "out", tmp_path / "model"
    real = voxelwise._masked_values
    read: list[str] = []

    def failing(path: Path, mask_path: str) -> np.ndarray:
        read.append(Path(path).name)
        if Path(path).name == "s0_10.nii.gz":  # site b's fourth image
            raise Interrupt
        return real(path, mask_path)

    monkeypatch.setattr(voxelwise, "_masked_values", failing)
    with pytest.raises(Interrupt):
        fit_voxelwise(s["manifest"], mask=s["mask"], batch="site", covariates=["age"],
                      model_dir=model, output_dir=out)
    monkeypatch.setattr(voxelwise, "_masked_values", lambda p, m: read.append(Path(p).name)
                        or real(p, m))
    read.clear()
    calls: list[tuple[str, int, int]] = []
    fit_voxelwise(s["manifest"], mask=s["mask"], batch="site", covariates=["age"],
                  model_dir=model, output_dir=out, progress=lambda *a: calls.append(a))
    assert calls[0] == ("read", 12, 18)  # sites a and c kept their sums
    site_b = sorted(Path(p).name for p, b in zip(s["table"]["image"], s["table"]["site"],
                                                  strict=True) if b == "b")
    assert sorted(read) == site_b
    X = stacked(s["root"], s["table"], s["mask"])
    expected = ih.ComBat().fit_transform(X, batch=s["table"]["site"],
                                         covariates=s["table"][["age"]])
    np.testing.assert_array_equal(_outputs(out, s["table"], s["mask"]),
                                  expected.astype(np.float32).astype(np.float64))

def test_the_model_is_combat_of_the_masked_voxels_in_the_model_envelope(tmp_path: Path) -> None:
    import json

    s = make_stack(tmp_path / "data")
    model_dir = tmp_path / "model"
    fit_voxelwise(s["manifest"], mask=s["mask"], batch="site", covariates=["age"],
                  model_dir=model_dir, output_dir=tmp_path / "out")
    doc = json.loads((model_dir / "model.json").read_text())
    assert (doc["format"], doc["kind"]) == ("imharmony.model", "imharmony.voxelwise")
    loaded, model = voxelwise._load_model(model_dir)
    # voxels are numbered in the order NIfTI stores them (Fortran order of the grid)
    mask = np.asanyarray(nib.load(s["mask"]).dataobj) != 0
    number = np.zeros(mask.shape, dtype=int)
    number[mask] = np.arange(mask.sum())
    X = stacked(s["root"], s["table"], s["mask"])[:, number.T[mask.T]]
    ref = ih.ComBat().fit(X, batch=s["table"]["site"], covariates=s["table"][["age"]]).fit_
    for name in ("grand_mean", "var_pooled", "beta", "gamma_hat", "delta_hat", "gamma_star",
                 "delta_star"):
        np.testing.assert_allclose(loaded.arrays[name].read(), getattr(ref, name), rtol=1e-10,
                                   err_msg=name)
    np.testing.assert_array_equal(loaded.arrays["adjusted"].read(), ref.adjusted)
    np.testing.assert_array_equal(loaded.arrays["mask"], mask)
    np.testing.assert_array_equal(loaded.arrays["n_iter"], ref.n_iter)
    assert list(model.batches_) == ["a", "b", "c"]
    assert loaded.content["batch_column"] == "site"


def test_a_tampered_model_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    import json

    from imharmony.errors import ModelFileError

    s = make_stack(tmp_path / "data", n=9)
    model_dir = tmp_path / "model"
    fit_voxelwise(s["manifest"], mask=s["mask"], batch="site", model_dir=model_dir,
                  output_dir=tmp_path / "out")
    path = model_dir / "model.json"
    doc = json.loads(path.read_text())
    doc["content"]["combat"]["reference_index"] = 1
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="'combat' do not match their checksum"):
        apply_voxelwise(s["manifest"], model_dir=model_dir, output_dir=tmp_path / "applied")
    assert not (tmp_path / "applied").exists()


def _edit(root: Path, rel: str, mask: np.ndarray, edit) -> None:
    img = nib.load(root / rel)
    data = img.get_fdata(dtype=np.float32)
    values = data[mask]
    edit(values)
    data[mask] = values
    nib.save(nib.Nifti1Image(data, img.affine), root / rel)


def test_voxels_the_sums_cannot_serve_get_the_in_memory_moments(
    tmp_path: Path, monkeypatch, moments_in_memory: bool
) -> None:
    # a missing value, a voxel constant within a site and a voxel the covariate explains
    # exactly: their moments come from their values in the stack, as in memory (moments held
    # in the cluster's memory are then stored to be mended)
    monkeypatch.setattr(voxelwise, "_rows_per_task", lambda V: 4)
    s = make_stack(tmp_path / "data")
    mask = np.asanyarray(nib.load(s["mask"]).dataobj) != 0
    table = s["table"]
    for i, rel in enumerate(table["image"]):
        def edit(v: np.ndarray, i: int = i) -> None:
            if i in (2, 7):
                v[5] = np.nan
            if table["site"][i] == "a":
                v[11] = 40.0
            v[20] = np.float32(3.0 + 0.5 * table["age"][i] + 2.0 * "abc".index(table["site"][i]))

        _edit(s["root"], rel, mask, edit)
    out = tmp_path / "out"
    fit_voxelwise(s["manifest"], mask=s["mask"], batch="site", covariates=["age"],
                  model_dir=tmp_path / "model", output_dir=out)
    X = stacked(s["root"], table, s["mask"])
    with pytest.warns(HarmonizationWarning, match="11: constant inside a batch"):
        expected = ih.ComBat().fit_transform(X, batch=table["site"], covariates=table[["age"]])
    got = _outputs(out, table, s["mask"])
    assert np.isnan(got[[2, 7], 5]).all()
    np.testing.assert_array_equal(got, expected.astype(np.float32).astype(np.float64))


def test_an_infinite_value_names_the_voxel(tmp_path: Path) -> None:
    from imharmony.errors import DataError

    s = make_stack(tmp_path / "data", n=9)
    mask = np.asanyarray(nib.load(s["mask"]).dataobj) != 0

    def edit(v: np.ndarray) -> None:
        v[13] = np.inf

    _edit(s["root"], s["table"]["image"][4], mask, edit)
    # voxels are numbered in the mask's storage (Fortran) order
    number = np.zeros(mask.shape, dtype=int)
    number.T[mask.T] = np.arange(mask.sum())
    with pytest.raises(DataError, match=rf"masked voxel\(s\) \[{number[mask][13]}\].*infinite"):
        fit_voxelwise(s["manifest"], mask=s["mask"], batch="site", model_dir=tmp_path / "model",
                      output_dir=tmp_path / "out")
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("size", [100, 4096, 3 * 4096 + 352])
@pytest.mark.parametrize("direct", [True, False])
def test_an_uncached_write_writes_every_byte(tmp_path: Path, monkeypatch, size: int,
                                             direct: bool) -> None:
    # whole 4 KiB blocks bypass the page cache where the system allows it, the tail is buffered;
    # without O_DIRECT (or where it is refused) everything is buffered
    if not direct:
        monkeypatch.delattr(voxelwise.os, "O_DIRECT", raising=False)
    data = voxelwise._aligned_bytes(size)
    assert data.ctypes.data % voxelwise._ALIGN == 0
    data[:] = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * (size + 5000))  # longer than the data: must be truncated
    voxelwise._write_uncached(path, data)
    assert path.read_bytes() == data.tobytes()


def test_a_second_run_with_another_mask_in_the_same_process_uses_that_mask(tmp_path: Path) -> None:
    # the local cluster runs in this process: what a task caches of one run's mask must not
    # serve the next run, whose mask is written at the same place in the same output folder
    s = make_stack(tmp_path / "data")
    inner = np.zeros(nib.load(s["mask"]).shape, np.uint8)
    inner[2:5, 2:6, 1:4] = 1  # another region (and another voxel count) than the first mask
    nib.save(nib.Nifti1Image(inner, nib.load(s["mask"]).affine), tmp_path / "inner.nii.gz")
    out = tmp_path / "out"
    for mask_path in (s["mask"], tmp_path / "inner.nii.gz"):
        fit_voxelwise(s["manifest"], mask=mask_path, batch="site", covariates=["age"],
                      model_dir=tmp_path / f"model-{mask_path.name}", output_dir=out)
    X = stacked(s["root"], s["table"], tmp_path / "inner.nii.gz")
    expected = ih.ComBat().fit_transform(X, batch=s["table"]["site"],
                                         covariates=s["table"][["age"]])
    got = _outputs(out, s["table"], tmp_path / "inner.nii.gz")
    np.testing.assert_array_equal(got, expected.astype(np.float32).astype(np.float64))
    first = nib.load(s["root"] / s["table"]["image"][0]).get_fdata()
    again = nib.load(out / Path(s["table"]["image"][0]).name).get_fdata()
    np.testing.assert_array_equal(again[inner == 0], first[inner == 0])
