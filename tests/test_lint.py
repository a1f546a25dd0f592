"""ruff over the sources: pyflakes rules (unused imports and names, undefined names, ...) over the library, the tests
and the tools, and lines of at most 120 characters where people write code: the notebooks' code cells, the tests and
the tools. The generated modules are checked by pyflakes only: nbdev writes their `__all__` lines itself."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECORD_SCRIPTS = sorted(str(p.relative_to(REPO)) for p in REPO.glob('results/**/*.py'))   # the records' own tools


TOOLS = ['tests', 'docs_build', 'benchmarks', *RECORD_SCRIPTS]


@pytest.mark.parametrize('rules, paths', [(['--select', 'F'], ['daq', *TOOLS]),
                                          (['--select', 'E501', '--line-length', '120'], ['nbs', *TOOLS])],
                         ids=['pyflakes', 'lines'])
def test_ruff(rules, paths):
    ruff = Path(sys.executable).parent / 'ruff'
    assert ruff.is_file(), f'{ruff} not found: is the dev extra installed (pip install -e ".[dev]")?'
    r = subprocess.run([str(ruff), 'check', *rules, '--no-cache', '--output-format', 'concise', *paths], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
