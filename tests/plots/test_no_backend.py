"""Importing the library and drawing its figures leaves matplotlib's backend alone, and figures
are written without pyplot."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from assets_pkg.core.plots.figures import figure_bytes, png_markdown, save_png
from assets_pkg.core.plots.training import plot_loss_history

REPO = Path(__file__).resolve().parents[2]

# Imports every module of assets_pkg.core, draws one figure, and reports the backend state.
PROBE = r"""
import importlib, json, pkgutil, sys
import matplotlib
chosen = sys.argv[1]
if chosen != "auto":
    matplotlib.use(chosen)
before = matplotlib.rcParams._get_backend_or_none()
import assets_pkg.core
for m in pkgutil.walk_packages(assets_pkg.core.__path__, "assets_pkg.core."):
    importlib.import_module(m.name)
from assets_pkg.core.plots.figures import figure_bytes
from assets_pkg.core.plots.training import plot_loss_history
png = figure_bytes(plot_loss_history([{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}]))
print(json.dumps({"before": before, "after": matplotlib.rcParams._get_backend_or_none(),
                  "pyplot": "matplotlib.pyplot" in sys.modules, "png": png[:4] == b"\x89PNG"}))
"""


def _probe(chosen: str) -> dict:
    import json

    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", PROBE, chosen], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_importing_the_library_does_not_select_or_change_the_backend():
    auto = _probe("auto")  # nothing chosen: the library must not choose one
    assert auto["before"] is None and auto["after"] is None, auto
    assert not auto["pyplot"] and auto["png"]
    svg = _probe("svg")  # a user's choice survives importing the library and drawing
    assert svg["before"] == svg["after"] == "svg", svg


def test_save_png_writes_a_readable_png_atomically(tmp_path):
    fig = plot_loss_history([{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}], title="t")
    assert isinstance(fig, Figure) and fig.canvas.manager is None
    path = save_png(fig, tmp_path / "sub" / "loss.png", dpi=50)
    data = path.read_bytes()
    assert data[:4] == b"\x89PNG" and (path.stat().st_mode & 0o777) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["loss.png"]  # no temporary left behind
    assert png_markdown(path, "loss").startswith("![loss](data:image/png;base64,")
    # same figure, same pixels: bytes of a fresh figure equal the file
    again = figure_bytes(plot_loss_history([{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.5}], title="t"), dpi=50)
    assert again == data
    assert np.frombuffer(data, np.uint8).size > 1000
