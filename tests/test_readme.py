"""The README's fresh-machine commands stay true: CI runs the README's test command verbatim."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    lines = (REPO / "README.md").read_text().splitlines()
    return [line for line in lines[:20] if line.startswith("python3 -m venv")]


def test_readme_opens_with_demo_then_test_command():
    demo, tests = _readme_commands()[:2]
    assert demo.endswith("actsort demo")
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command():
    tests = _readme_commands()[1]
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert tests in ci_lines


def test_every_cli_command_is_documented():
    from actsort_gpu.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    readme = (REPO / "README.md").read_text()
    missing = [name for name in sub.choices if f"actsort {name}" not in readme]
    assert not missing, f"README does not mention: {missing}"
