"""The notebooks in nbs/ are the source of truth: test them two ways.

* `test_papermill[<notebook>]`: each notebook run top to bottom in a fresh `python3` kernel (this interpreter) by
  papermill, minus the cells flagged with settings.ini's `tst_flags` (what nbdev_test would skip), with optional CI
  parameter overrides from `DAQ_PAPERMILL_PARAMS` (JSON: {"00_dasr.ipynb": {"n_random": 1000}, ...}). The execution is
  the documentation build's (`docs_build.build.execute`): within a test session each notebook runs once, and the site
  (tests/test_docs.py) is built from the same executions.
* `test_export_and_clean_change_nothing`: in a copy of the repo, `nbdev_export` + `nbdev_clean` reproduce daq/ and
  nbs/ byte for byte (so the library is in sync with the notebooks and the notebooks are clean).
"""
import ast
import configparser
import difflib
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path, PurePosixPath

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path: sys.path.insert(0, str(REPO))
from docs_build import build as B                              # noqa: E402
BIN_DIR = Path(sys.executable).parent
PARAMS_ENV = 'DAQ_PAPERMILL_PARAMS'


def read_settings(repo: Path = REPO) -> configparser.SectionProxy:
    cfg = configparser.ConfigParser(delimiters=['='], interpolation=None)
    if not cfg.read(repo / 'settings.ini', encoding='utf-8'): raise FileNotFoundError(repo / 'settings.ini')
    return cfg['DEFAULT']


SETTINGS = read_settings()
NBS = REPO / SETTINGS.get('nbs_path', 'nbs')
LIB = SETTINGS.get('lib_path', SETTINGS['lib_name'])
TST_FLAGS = frozenset(f.lower() for f in SETTINGS.get('tst_flags', '').split())


def tool(name: str) -> str:
    "Console script `name` of this interpreter's environment (not whatever comes first on PATH)."
    path = BIN_DIR / name
    if not path.is_file():
        pytest.fail(f'{name} not found in {BIN_DIR}; is the dev extra installed (pip install -e ".[dev]")?')
    return str(path)


def subprocess_env() -> dict:
    "os.environ with this interpreter's bin dir first on PATH, minus nbdev's IN_TEST (it makes nbdev_export a no-op)."
    env = {k: v for k, v in os.environ.items() if k != 'IN_TEST'}
    env['PATH'] = os.pathsep.join([str(BIN_DIR), env.get('PATH', '')])
    return env


def run(cmd, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def notebooks():
    "nbs/*.ipynb, sorted, minus names starting with `_` or `.` (nbdev's own rule)."
    return sorted(p for p in NBS.glob('*.ipynb') if not p.name.startswith(('_', '.')))


# ---------------------------------------------------------------- nbdev directives (the site build's reading)

skip_reason, directives = B.skip_reason, B.directives


@pytest.mark.parametrize('src,dropped', [
    ('#|slow\nx = 1', True), ('#| slow\nx = 1', True), ('# |slow\nx = 1', True), ('#|SLOW\nx = 1', True),
    ('  #  |  cuda  \nx = 1', True), ('\n#|notest\nx = 1', True), ('#|export\n#|slow\nx = 1', True),
    ('#|slow:\nx = 1', True), ('%%time\n#|slow\nx = 1', True),
    ('#|eval: false\nx = 1', True), ('#| eval:false\nx = 1', True), ('#|eval: False\nx = 1', True),
    ('#|hide\nimport nbdev; nbdev.nbdev_export()', True),
    ('x = 1', False), ('#|export\nx = 1', False), ('#|eval: true\nx = 1', False), ('#|slowish\nx = 1', False),
    ('x = 1\n#|slow', False), ('# a comment\n#|slow\nx = 1', False), ('print("#|slow")', False),
    ('#|hide\n# slow', False),
])
def test_skip_directives(src, dropped):
    "The papermill filter drops exactly the cells nbdev_test skips (flags from settings.ini, case-insensitively)."
    assert {'slow', 'cuda', 'notest'} <= TST_FLAGS, f'settings.ini tst_flags changed: {sorted(TST_FLAGS)}'
    assert (skip_reason(nbformat.v4.new_code_cell(src), TST_FLAGS) is not None) == dropped


# ---------------------------------------------------------------- a. papermill

def _load_overrides() -> dict:
    raw = os.environ.get(PARAMS_ENV, '').strip()
    if not raw: return {}
    try: val = json.loads(raw)
    except json.JSONDecodeError as e: pytest.fail(f'{PARAMS_ENV} is not valid JSON ({e}): {raw!r}')
    if not isinstance(val, dict) or not all(isinstance(v, dict) for v in val.values()):
        pytest.fail(f'{PARAMS_ENV} must map notebook file names to dicts of parameters, got {raw!r}')
    unknown = sorted(set(val) - {p.name for p in notebooks()})
    if unknown: pytest.fail(f'{PARAMS_ENV} names notebooks that are not in {NBS}: {unknown}')
    return val


@pytest.fixture(scope='session')
def papermill_overrides() -> dict:
    return _load_overrides()


def _assigned_names(src: str) -> set:
    names = set()
    for node in ast.parse(src).body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


@pytest.mark.parametrize('nb_name', [p.name for p in notebooks()] or
                         [pytest.param(None, id='no-notebooks')])
def test_papermill(nb_name, kernel_env, papermill_overrides, repo):
    assert nb_name is not None, f'no notebooks found in {NBS}'
    project = B.Project.load(repo)
    nb_path = NBS / nb_name
    ex = B.prepare(project, nb_path)[1]                          # minus the cells nbdev_test skips
    params_cells = [c for c in ex.cells if 'parameters' in c.get('metadata', {}).get('tags', [])]
    assert params_cells, (f'{nb_name} has no code cell tagged `parameters` (that survives the tst_flags filter); '
                          'papermill needs one for CI overrides: tag the cell holding its CI-sized defaults')
    params = papermill_overrides.get(nb_name, {})
    if params:
        unknown = sorted(set(params) - _assigned_names(params_cells[0].source))
        assert not unknown, f'{PARAMS_ENV} sets {unknown} for {nb_name}, which its parameters cell does not define'
    try: B.execute(project, B.execution_name(project, nb_path), ex, B.work_dir(project), reuse=True, parameters=params)
    except B.ExecutionError as e: pytest.fail(str(e), pytrace=False)


def test_python3_kernel_is_this_interpreter(tmp_path, kernel_env):
    "papermill's `python3` kernel runs this very interpreter, in the requested cwd, with the injected parameters."
    import papermill
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("marker = 'default'", metadata={'tags': ['parameters']}),
                nbformat.v4.new_code_cell('import json, os, sys\nprint(json.dumps(dict(executable=sys.executable, '
                                          'prefix=sys.prefix, cwd=os.getcwd(), marker=marker)))')]
    (tmp_path / 'cwd').mkdir()
    nbformat.write(nb, tmp_path / 'probe.ipynb')
    papermill.execute_notebook(str(tmp_path / 'probe.ipynb'), str(tmp_path / 'probe.out.ipynb'), kernel_name='python3',
                               language='python', cwd=str(tmp_path / 'cwd'), parameters={'marker': 'injected'},
                               progress_bar=False)
    done = nbformat.read(tmp_path / 'probe.out.ipynb', as_version=4)
    text = ''.join(o.get('text', '') for o in done.cells[-1].outputs if o.get('output_type') == 'stream')
    got = json.loads(text)
    assert os.path.realpath(got['prefix']) == os.path.realpath(sys.prefix), got
    assert os.path.realpath(got['executable']) == os.path.realpath(sys.executable), got
    assert os.path.realpath(got['cwd']) == os.path.realpath(tmp_path / 'cwd'), got
    assert got['marker'] == 'injected', got


# ---------------------------------------------------------------- b. export + clean are no-ops

def _gitignore_rules(root: Path):
    rules = []
    gi = root / '.gitignore'
    for line in (gi.read_text(encoding='utf-8').splitlines() if gi.is_file() else []):
        line = line.rstrip()
        if not line or line.startswith('#'): continue
        neg = line.startswith('!')
        pat = line[1:] if neg else line
        dir_only = pat.endswith('/')
        anchored = '/' in pat.rstrip('/')
        rules.append((pat.strip('/'), neg, dir_only, anchored))
    return rules


def _ignored(rel: PurePosixPath, is_dir: bool, rules) -> bool:
    hit = False
    for pat, neg, dir_only, anchored in rules:
        if dir_only and not is_dir: continue
        if fnmatch.fnmatchcase(str(rel) if anchored else rel.name, pat): hit = not neg
    return hit


def walk_files(root: Path) -> list:
    "Files under `root` that git would list with `ls-files -co --exclude-standard` (root .gitignore only; no .git)."
    rules, out = _gitignore_rules(root), []
    for d, dirs, files in os.walk(root):
        rd = PurePosixPath(Path(d).relative_to(root).as_posix())
        dirs[:] = [x for x in dirs
                   if x != '.git' and not _ignored(rd / x if str(rd) != '.' else PurePosixPath(x), True, rules)]
        out += [str(rd / f if str(rd) != '.' else PurePosixPath(f)) for f in files
                if not _ignored(rd / f if str(rd) != '.' else PurePosixPath(f), False, rules)]
    return sorted(out)


def project_files(repo: Path) -> list:
    "Tracked and untracked-but-not-ignored files of the repo (relative posix paths)."
    if shutil.which('git') and (repo / '.git').exists():
        res = subprocess.run(['git', 'ls-files', '-z', '-co', '--exclude-standard'], cwd=repo, capture_output=True)
        if res.returncode == 0:
            return sorted({os.fsdecode(p) for p in res.stdout.split(b'\0')
                           if p and (repo / os.fsdecode(p)).is_file()})
        warnings.warn(f'git ls-files failed ({res.stderr.decode(errors="replace").strip()}); '
                      'listing files by .gitignore')
    return walk_files(repo)


def _is_generated(path: Path) -> bool:
    head = path.read_text(encoding='utf-8', errors='replace')[:2000]
    return '# AUTOGENERATED! DO NOT EDIT!' in head or head.startswith('# Autogenerated by nbdev')


def _diff(a: Path, b: Path, name: str, n: int = 30) -> str:
    try: lines = list(difflib.unified_diff(a.read_text(encoding='utf-8').splitlines(),
                                           b.read_text(encoding='utf-8').splitlines(),
                                           f'repo/{name}', f'after/{name}', lineterm='', n=1))
    except UnicodeDecodeError: return f'  (binary, {a.stat().st_size} -> {b.stat().st_size} bytes)'
    return '\n'.join(['  ' + l for l in lines[:n]] + (['  ...'] if len(lines) > n else []))


def test_export_and_clean_change_nothing(repo, tmp_path):
    copy = tmp_path / 'repo'
    files = project_files(repo)
    assert 'settings.ini' in files, files
    for rel in files:
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, copy / rel)
    watched = (LIB, NBS.relative_to(repo).as_posix())
    before = sorted(f for f in files if f.split('/', 1)[0] in watched)
    assert any(f.endswith('.ipynb') for f in before), f'no notebooks under {watched}'
    # Drop the generated modules so that export must recreate them: a module whose notebook is gone shows up as missing.
    for rel in before:
        if rel.startswith(LIB + '/') and rel.endswith('.py') and _is_generated(copy / rel): (copy / rel).unlink()
    for cmd in ('nbdev_export', 'nbdev_clean'):
        res = run([tool(cmd)], cwd=copy)
        assert res.returncode == 0, f'{cmd} failed (exit {res.returncode}):\n{res.stdout}'
    after = sorted(f for f in walk_files(copy) if f.split('/', 1)[0] in watched)
    problems = [f'{f}: in the repo but not produced by nbdev_export (stale module, or its notebook is gone?)'
                for f in sorted(set(before) - set(after))]
    problems += [f'{f}: created by nbdev_export/nbdev_clean but not in the repo (run nbdev_export and add it)'
                 for f in sorted(set(after) - set(before))]
    problems += [f'{f}: differs after nbdev_export + nbdev_clean (run them and commit)\n{_diff(repo / f, copy / f, f)}'
                 for f in sorted(set(before) & set(after)) if (repo / f).read_bytes() != (copy / f).read_bytes()]
    assert not problems, 'repo is not in sync with nbdev_export + nbdev_clean:\n' + '\n'.join(problems)


def test_readme_is_not_generated_from_a_notebook(repo):
    "README.md is written by hand: settings.ini's readme_nb must name no notebook nbdev_readme would render over it."
    readme_nb = SETTINGS.get('readme_nb', 'index.ipynb')          # nbdev's default is index.ipynb
    assert not (NBS / readme_nb).exists(), f'nbdev_prepare would overwrite README.md with nbs/{readme_nb}'
    assert '.venv/bin/python -m pytest tests -q' in (repo / 'README.md').read_text()
