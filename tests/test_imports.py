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


def _installed_with(requirements:set) -> set:
    "Distribution names that installing `requirements` brings along (their dependencies, recursively), lower case."
    import importlib.metadata as md, re
    seen, todo = set(), list(requirements)
    while todo:
        name = todo.pop().lower()
        if name in seen: continue
        seen.add(name)
        try: reqs = md.requires(name) or []
        except md.PackageNotFoundError: continue
        todo += [re.split(r'[ ;<>=!~\[(]', r, maxsplit=1)[0] for r in reqs if 'extra ==' not in r]
    return seen


def test_module_level_imports_are_declared_requirements():
    "A core install (`pip install .`: settings.ini's requirements) has every module the package imports at load time."
    import ast, configparser, importlib.metadata as md
    cfg = configparser.ConfigParser(interpolation=None); cfg.read(REPO / 'settings.ini')
    allowed = _installed_with({r.split('==')[0].strip().lower() for r in cfg['DEFAULT']['requirements'].split()})
    distributions = md.packages_distributions()
    missing = {}
    for path in sorted((REPO / 'daq').glob('*.py')):
        for node in ast.parse(path.read_text()).body:                  # module level only: lazy imports may be extras
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for top in {n.split('.')[0] for n in names}:
                if top in sys.stdlib_module_names or top == 'daq': continue
                if not {d.lower() for d in distributions.get(top, [top])} & allowed:
                    missing.setdefault(top, []).append(path.name)
    assert not missing, f'imported at module level but not installed by settings.ini requirements: {missing}'
