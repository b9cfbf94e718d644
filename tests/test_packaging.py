"""A plain ``pip install`` of winnow (not editable, not the Makefile) gives a working ``language``
stage: its model is package data, and fastText's module is fasttext-numpy2's (no other wheel
installs a ``fasttext`` module over it)."""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
import venv

from helpers import REPO

CHECK = r"""
import json, sys
import fasttext, pyarrow as pa
import stages
from pipeline.registry import load_stages, STAGES
load_stages()
stage = STAGES["language"]()
stage.setup()
out, reasons = stage.transform(pa.RecordBatch.from_pydict({"text": [
    "All human beings are born free and equal in dignity and rights.",
    "Alle Menschen sind frei und gleich an Würde und Rechten geboren.",
]}))
print(json.dumps({
    "stages": stages.__file__,
    "train_supervised": hasattr(fasttext, "train_supervised"),
    "languages": out.column("language").to_pylist(),
    "reasons": list(reasons),
}))
"""


def test_plain_pip_install_in_a_fresh_venv(tmp_path):
    # Only what a wheel is built from: building in the checkout would leave build/ and an
    # egg-info there.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for pkg in ("pipeline", "stages", "tokenizer", "train"):
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # The dependencies come from the test's own environment (no network, no minutes of installs):
    # a .pth appends its site-packages after the fresh venv's own, so winnow itself is imported
    # from the fresh install, never from the checkout or the editable install.
    (tmp_path / "venv" / site.split(str(env_dir) + "/")[1] / "deps.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n"
    )
    subprocess.run(
        [py, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", str(src)],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    shutil.rmtree(src)  # nothing may be read from the build folder
    res = subprocess.run([py, "-c", CHECK], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    import json

    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["stages"].startswith(site), got["stages"]
    assert got["train_supervised"]  # fasttext-numpy2's module, not fasttext-predict's
    assert got["languages"] == ["en"] and got["reasons"] == [None, "language_not_kept"]
    listed = subprocess.run(
        [env_dir / "bin" / "winnow", "stages", "language"], capture_output=True, text=True
    )
    assert listed.returncode == 0 and "lid.176.ftz shipped with winnow" in listed.stdout
