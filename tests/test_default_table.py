"""README's "What the default shows" is what bench/default_table.py prints on this checkout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- default-table:begin -->\n(.*?)<!-- default-table:end -->", text, re.S)
    assert match, "README.md lost its default-table markers"
    return match.group(1)


def test_readme_has_the_markers_and_every_row_of_the_script():
    sys.path.insert(0, str(ROOT / "bench"))
    import default_table

    block = readme_block()
    for label, command, _ in default_table.ROWS:
        assert f"| {label} | `igm train {command}` |" in block


@pytest.mark.slow
def test_the_script_reproduces_the_readme_table():  # ~10 min on a 2-core shared CPU box
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "bench/default_table.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == readme_block()
