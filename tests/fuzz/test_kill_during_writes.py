"""SIGKILL during writes: a reader finds the old file or the new one, never a mix or a torso.

A child process writes in a tight loop (a model alternating between two fits, an image, a
table); the test kills it at seeded random moments, then checks what is on disk, and that the
temporaries the kill left behind are swept by the next write.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

import imharmony as ih

CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np, pandas as pd
    import imharmony as ih
    from imharmony.io.tables import write_table

    kind, target = sys.argv[1], sys.argv[2]
    rng = np.random.default_rng(0)
    site = np.repeat(["a", "b"], 20)
    X = pd.DataFrame(rng.normal(size=(40, 300)), columns=[f"f{i}" for i in range(300)])
    if kind == "model":
        models = [ih.ComBat().fit(X, batch=site), ih.ComBat(mean_only=True).fit(X, batch=site)]
    images = [ih.Image(np.full((64, 64, 32), v, np.float32)) for v in (1.0, 2.0)]
    tables = [X.assign(v=v) for v in (1.0, 2.0)]
    print("ready", flush=True)
    i = 0
    while True:
        if kind == "model":
            models[i % 2].save(target)
        elif kind == "image":
            ih.write_image(images[i % 2], target)
        else:
            write_table(tables[i % 2], target)
        i += 1
    """
)


def _start(kind: str, target: Path) -> subprocess.Popen[str]:
    env = dict(os.environ)
    src = str(Path(ih.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, kind, str(target)], stdout=subprocess.PIPE, env=env,
        text=True,
    )


def _kill_while_writing(child: subprocess.Popen[str], target: Path, delay: float) -> None:
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        # wait for the first complete write, then kill at a random moment of a later one
        deadline = time.monotonic() + 60
        while not target.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def test_kill_leaves_old_or_new_and_next_write_sweeps(tmp_path: Path) -> None:
    from imharmony.io.tables import write_table

    rng = np.random.default_rng(5)
    kinds = {"model": ".json", "image": ".nii.gz", "table": ".csv"}
    targets = {kind: tmp_path / kind / f"out{suffix}" for kind, suffix in kinds.items()}
    for target in targets.values():
        target.parent.mkdir()
    children = {kind: _start(kind, targets[kind]) for kind in kinds}  # in parallel
    for kind, child in children.items():
        _kill_while_writing(child, targets[kind], float(rng.uniform(0.05, 0.5)))

    # what a reader finds: one of the two versions, whole
    model = ih.ComBat.load(targets["model"])  # never a broken .json/.npz pair
    assert model.mean_only in (True, False) and model.n_features_in_ == 300
    value = np.unique(ih.read_image(targets["image"]).array)
    assert value.size == 1 and value[0] in (1.0, 2.0)
    table = pd.read_csv(targets["table"])
    assert table.shape == (40, 301) and table["v"].nunique() == 1

    # the next write (a live process) sweeps what the killed writer left behind
    site = np.repeat(["a", "b"], 5)
    ih.ComBat().fit(rng.normal(size=(10, 3)), batch=site).save(targets["model"])
    ih.write_image(ih.Image(np.zeros((2, 2, 2), np.float32)), targets["image"])
    write_table(pd.DataFrame({"a": [1]}), targets["table"])
    for kind, target in targets.items():
        names = sorted(p.name for p in target.parent.iterdir())
        if kind == "model":
            assert len(names) == 2 and names[1] == "out.json" and names[0].endswith(".npz")
        else:
            assert names == [target.name], names
