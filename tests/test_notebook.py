"""notebooks/tour.ipynb (the seed page's examples) runs from top to bottom in a fresh kernel."""
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]


def test_the_tour_notebook_runs(tmp_path):
    notebook = nbformat.read(REPO / "notebooks" / "tour.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "r2plus1d_18" in text and "nodes" in text and "(1, 400)" in text and "the same weights: True" in text
    pictures = sum("image/png" in o.get("data", {}) for o in outputs)
    assert pictures >= 5, pictures  # frames, the action over time, filters, summary graphic, feature space
