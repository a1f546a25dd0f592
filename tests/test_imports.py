"""Every module of the package compiles and imports with warnings turned into errors (no invalid escape sequences
in docstrings, no warnings at import)."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_every_module_imports_under_W_error():
    files = sorted((REPO / 'daq').glob('*.py'))
    modules = [f'daq.{p.stem}' for p in files if not p.stem.startswith('_')]
    assert 'daq.quant' in modules and 'daq.dasr' in modules
    # compile() from source: a cached .pyc would hide a SyntaxWarning from a plain import
    code = '\n'.join([*(f'compile(open({str(p)!r}).read(), {str(p)!r}, "exec")' for p in files),
                      *(f'import {m}' for m in modules)])
    r = subprocess.run([sys.executable, '-W', 'error', '-c', code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
