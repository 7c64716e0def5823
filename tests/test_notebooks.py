"""The committed notebooks as a reader meets them on the repository page (their execution is nbval's job)."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 7


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean_and_fully_executed(path):
    nb = json.loads(path.read_text())
    assert "widgets" not in nb["metadata"], "saved widget state: strip it (see README, Notebooks)"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    counts = []
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        assert "set_num_threads" not in source, "a notebook must not force a thread count"
        assert "HSNET_SMOKE" not in source and "smoke()" not in source, "stored outputs come from the full run"
        if cell["cell_type"] != "code":
            continue
        counts.append(cell["execution_count"])
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"an error is stored in {path.name}"
            data = out.get("data", {})
            assert "application/vnd.jupyter.widget-view+json" not in data or "text/plain" in data
            assert "tqdm" not in json.dumps(data)[:2000], "a progress bar is stored"
    assert counts == list(range(1, len(counts) + 1)), "run top to bottom in one kernel"
    assert path.stat().st_size < 1_500_000
