"""The README's quick start and "Your own images" blocks, run as written (after the install) in a fresh folder."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def bash_blocks(section: str) -> list[str]:
    """The ```bash blocks of a README section (from its heading to the next one)."""
    text = README.read_text()
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```bash\n(.*?)```", text[start : end if end > 0 else None], re.S)


def hsnet_commands(block: str) -> list[list[str]]:
    """The hsnet commands of a block (continuation lines joined; install steps and comments left out)."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words[:1] == ["hsnet"]:
                commands.append(words[1:])
    return commands


@pytest.mark.slow
def test_quick_start_then_own_images_run_as_written(tmp_path):
    commands = [c for s in ("Quick start", "Your own images") for b in bash_blocks(s) for c in hsnet_commands(b)]
    assert [c[0] for c in commands] == ["demo", "segment"], commands
    env = {**os.environ, "HSNET_SMOKE": "1"}  # the demo at smoke size: same commands, same files
    for args in commands:
        r = subprocess.run(
            [sys.executable, "-m", "hsnetlib.cli", *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert r.returncode == 0, f"hsnet {' '.join(args)}: {r.stderr}"
    assert (tmp_path / "pred.png").is_file() and (tmp_path / "pred_mask.png").is_file()
