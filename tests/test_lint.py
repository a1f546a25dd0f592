"""ruff's pyflakes rules (unused imports and names, undefined names, ...) over the library, the tests and the tools.
The notebooks' `#|export` cells are checked through the modules nbdev_export writes from them."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_pyflakes():
    ruff = Path(sys.executable).parent / 'ruff'
    assert ruff.is_file(), f'{ruff} not found: is the dev extra installed (pip install -e ".[dev]")?'
    r = subprocess.run([str(ruff), 'check', '--select', 'F', '--no-cache', '--output-format', 'concise',
                        'daq', 'tests', 'docs_build', 'benchmarks'], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
