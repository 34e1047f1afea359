"""The CLI as a technician uses it: `count` on recorded footage, `python agent.py` alias."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run(*args, **kw):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, **kw)


@pytest.mark.slow
def test_count_prints_json(clip, model_path):
    result = run("-m", "edge_agent", "count", str(clip), "--line", "0.5,0,0.5,1", "--model", str(model_path),
                 "--max-frames", "150", "--json")
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert set(output) == {"in", "out", "frames", "fps"}
    assert output["frames"] == 150 and output["fps"] > 0
    assert output["in"] >= 0 and output["out"] >= 0


def test_count_rejects_a_bad_line(clip, model_path):
    result = run("-m", "edge_agent", "count", str(clip), "--line", "0.5,0,0.5", "--model", str(model_path))
    assert result.returncode == 2
    assert "X1,Y1,X2,Y2" in result.stderr and "Traceback" not in result.stderr


def test_agent_py_is_the_same_cli():
    assert run("agent.py", "--version").stdout == run("-m", "edge_agent", "--version").stdout != ""


def test_missing_model_is_a_clear_error(clip, tmp_path):
    result = run("-m", "edge_agent", "count", str(clip), "--line", "0.5,0,0.5,1", "--model", str(tmp_path / "none.onnx"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
