"""The README's two commands: the main job is the quickstart, and the test command is the
one ``.ci/run`` runs verbatim (with ruff after it)."""

import re
from pathlib import Path

from stockgym.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def _two_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    two = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", two, flags=re.S)


def test_ci_runs_the_readme_test_command_and_ruff():
    blocks = _two_commands()
    test_cmd = [b.strip() for b in blocks if "pytest" in b]
    assert len(test_cmd) == 1
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd[0] in ci, ".ci/run must run the README's test command verbatim"
    assert "ruff check ." in ci and "ruff format --check ." in ci


def test_readme_main_command_is_the_quickstart():
    blocks = _two_commands()
    readme = (ROOT / "README.md").read_text()
    assert len(blocks) == 2, "the README gives exactly two commands"
    main_cmd = [b for b in blocks if "pytest" not in b]
    assert len(main_cmd) == 1 and main_cmd[0].strip().endswith("&& stockgym quickstart")
    assert "quickstart" in build_parser()._subparsers._group_actions[0].choices
    images = re.findall(r"!\[[^\]]*\]\((docs/[^)]+\.png)\)", readme)
    assert "docs/quickstart-evaluate.png" in images
    png = (ROOT / "docs" / "quickstart-evaluate.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 200_000
