"""The package's shape: no function in src/softprompt longer than 60 lines (a page you can read without scrolling).

Measured with ast from the `def` line (decorators excluded) to the function's last line, nested functions
counted inside their parent too.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "softprompt"
LIMIT = 60


def long_functions(root: Path, limit: int = LIMIT) -> list[str]:
    """'file.py:NAME (N lines)' for every function in root's .py files longer than limit lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(root)}:{node.name} ({length} lines)")
    return found


def test_no_function_in_the_package_is_over_60_lines():
    assert PACKAGE.is_dir() and any(PACKAGE.rglob("*.py"))
    assert long_functions(PACKAGE) == []


def test_the_check_finds_a_long_function(tmp_path):
    # The check itself: a 61-line function is reported, a 60-line one (and a short nested one) is not.
    body = "\n".join(f"    x{i} = {i}" for i in range(59))
    (tmp_path / "m.py").write_text(f"def ok():\n{body}\n\n\ndef too_long():\n{body}\n    return 0\n")
    assert long_functions(tmp_path) == ["m.py:too_long (61 lines)"]
