"""Every Python block of the README runs as written (after the demo the README names first)."""

from __future__ import annotations

import re
from pathlib import Path

from test_cli import run

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_python_blocks_run_as_written(tmp_path, monkeypatch):
    blocks = _blocks("python")
    assert blocks, "the README lost its Python examples"
    assert run("demo", "--out", "volbmd-demo", cwd=tmp_path).returncode == 0
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, str(README), "exec"), {"__name__": "readme"})
    assert (tmp_path / "out" / "demo" / "report.json").is_file()
    assert (tmp_path / "out" / "volbmd-demo" / "report.json").is_file()


def test_readme_keeps_the_two_set_up_commands():
    bash = [b.strip() for b in _blocks("bash")]
    assert "bash tools/setup_env.sh && .venv/bin/volbmd demo --out volbmd-demo" in bash
    assert "bash tools/setup_env.sh && .venv/bin/python -m pytest" in bash
