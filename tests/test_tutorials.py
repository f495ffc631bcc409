"""The tutorials run end to end (quick mode) and their notebooks match the jupytext "percent" scripts.

The notebooks are generated from the scripts; after editing a tutorial script regenerate them with::

    python tests/test_tutorials.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
SCRIPTS = {
    "embedseg_2d_tutorial": ["training_crop.png", "test_predictions.png"],
    "embedseg_3d_tutorial": ["volume_slices.png", "oracle_slices.png", "prediction_slices.png"],
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def split_cells(text: str) -> list[tuple[str, str]]:
    """Split a jupytext "percent" script into ``(cell_type, source)`` pairs.

    A line starting with ``# %%`` opens a cell (``# %% [markdown]``: a markdown cell whose lines are ``# ``-comments,
    shown without the ``# ``). Leading and trailing blank lines of a cell are dropped; text before the first marker
    must be blank.
    """
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        elif cells:
            cells[-1][1].append(line)
        elif line.strip():
            raise ValueError(f"text before the first '# %%' cell marker: {line!r}")
    out = []
    for kind, lines in cells:
        if kind == "markdown":
            bad = [ln for ln in lines if ln.strip() and not ln.startswith("#")]
            if bad:
                raise ValueError(f"markdown cell line is not a comment: {bad[0]!r}")
            lines = [ln[2:] if ln.startswith("# ") else ln.lstrip("#") for ln in lines]
        while lines and not lines[0].strip():
            lines.pop(0)
        while lines and not lines[-1].strip():
            lines.pop()
        out.append((kind, "\n".join(lines)))
    return out


def notebook_from_script(text: str) -> dict:
    """An nbformat-4 notebook (no outputs) with one cell per ``# %%`` cell of ``text``."""
    cells = []
    for i, (kind, source) in enumerate(split_cells(text)):
        lines = source.splitlines(keepends=True)
        cell = {"cell_type": kind, "id": f"cell-{i:02d}", "metadata": {}, "source": lines}
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    return {
        "cells": cells,
        "metadata": {
            "jupytext": {"formats": "ipynb,py:percent"},
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def write_notebooks() -> None:
    """Regenerate every ``tutorials/*.ipynb`` from its ``.py`` script."""
    for name in SCRIPTS:
        nb = notebook_from_script((TUTORIALS / f"{name}.py").read_text())
        (TUTORIALS / f"{name}.ipynb").write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------------------------------------------------ tests
def test_split_cells():
    text = "# %% [markdown]\n# # Title\n#\n# text\n\n# %%\nimport os\n\nx = 1\n\n\n# %%\nprint(x)\n"
    assert split_cells(text) == [("markdown", "# Title\n\ntext"), ("code", "import os\n\nx = 1"), ("code", "print(x)")]
    with pytest.raises(ValueError, match="not a comment"):
        split_cells("# %% [markdown]\nnot a comment\n")
    with pytest.raises(ValueError, match="before the first"):
        split_cells("x = 1\n# %%\ny = 2\n")


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_notebook_matches_script(name):
    script_cells = split_cells((TUTORIALS / f"{name}.py").read_text())
    nb = json.loads((TUTORIALS / f"{name}.ipynb").read_text())
    assert nb["nbformat"] == 4
    nb_cells = [(c["cell_type"], "".join(c["source"])) for c in nb["cells"]]
    assert len(nb_cells) == len(script_cells), "notebook out of date: run `python tests/test_tutorials.py`"
    for i, (got, expected) in enumerate(zip(nb_cells, script_cells)):
        assert got == expected, f"cell {i} differs from the script: run `python tests/test_tutorials.py`"
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, "notebooks are stored without outputs"
    code = [src for kind, src in script_cells if kind == "code"]
    assert any("QUICK" in src for src in code)
    assert sum(kind == "markdown" for kind, _ in script_cells) >= 5


def _run_quick(name: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, EMBEDSEG_TUTORIAL_QUICK="1", MPLBACKEND="Agg")
    env.pop("EMBEDSEG_TUTORIAL_DIR", None)
    # one thread: on a small, shared CPU several spinning OpenMP threads per process slow 3D convolutions 10-50x
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run(
        [sys.executable, str(TUTORIALS / f"{name}.py")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_tutorial_runs_quick(name, tmp_path):
    proc = _run_quick(name, tmp_path)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    out_dir = tmp_path / f"{name}_output"
    for fig in SCRIPTS[name]:
        path = out_dir / fig
        assert path.is_file(), f"{name} did not write {fig}; stdout:\n{proc.stdout[-3000:]}"
        assert path.stat().st_size > 5000 and path.read_bytes()[:8] == PNG_MAGIC
    assert "quick mode: True" in proc.stdout
    assert "AP_dsb" in proc.stdout
    assert list((out_dir / "runs").glob("events.out.tfevents.*")), "no TensorBoard event file"
    if name == "embedseg_3d_tutorial":
        # the oracle prediction clusters back into the true instances only with the right spacing
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("oracle, right spacing"))
        assert [float(v) for v in line.split()[3:]] == [1.0] * 5
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("oracle, spacing ignored"))
        assert float(line.split()[3]) < 0.5
    else:
        assert (out_dir / "data_quick" / "train" / "images").is_dir()
        assert (out_dir / "model.pt").is_file()


if __name__ == "__main__":
    write_notebooks()
    print(f"notebooks written in {TUTORIALS}")
