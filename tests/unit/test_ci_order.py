"""CI hands test files to its workers slowest first (scripts/run-pytest.sh): every file on
that list must exist, or the list silently stops doing its job."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_file_on_the_slowest_first_list_exists() -> None:
    script = (ROOT / "scripts" / "run-pytest.sh").read_text()
    block = re.search(r"SLOWEST_FIRST=\((.*?)\)", script, re.S)
    assert block is not None
    listed = block.group(1).split()
    assert len(listed) >= 10
    assert [path for path in listed if not (ROOT / path).is_file()] == []
