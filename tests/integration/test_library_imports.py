"""The installed library must import without the dev extra: peft is only needed by the benchmark
(benchmarks/, outside the package), the PEFT comparison tests and `peft_compat`'s optional checks."""

import pkgutil
import subprocess
import sys

import softprompt

# Every module of the package, imported in a fresh interpreter in which `import peft` raises ImportError
# (a None entry in sys.modules is how Python marks a module as unimportable).
IMPORT_ALL_WITHOUT_PEFT = """
import importlib, sys
sys.modules["peft"] = None
try:
    import peft
except ImportError:
    pass
else:
    raise SystemExit("the shim failed: peft still imports")
for name in sys.argv[1:]:
    importlib.import_module(name)
print("imported", len(sys.argv) - 1)
"""


def test_every_module_imports_without_peft():
    names = ["softprompt"] + [f"softprompt.{m.name}" for m in pkgutil.iter_modules(softprompt.__path__)]
    assert "softprompt.train" in names and "softprompt.bench" not in names
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL_WITHOUT_PEFT, *names], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["imported", str(len(names))]
