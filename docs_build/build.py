"""Execute the notebooks, run nbdev's documentation processors on them, and hand them to the renderer."""
from __future__ import annotations

import concurrent.futures
import configparser
import contextlib
import copy
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import yaml

REPO = Path(__file__).resolve().parents[1]
META = 'docs_build'            # cell metadata key this build uses internally (never written back to nbs/)


def log(*args):
    print('[docs]', *args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- configuration

def _deep_merge(a: dict, b: dict) -> dict:
    "`b` merged into a copy of `a`, recursively for dicts (as Quarto merges metadata files)."
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@dataclass
class Project:
    "settings.ini and the Quarto configuration of an nbdev project."
    repo: Path
    settings: dict
    nbs: Path
    lib: Path
    doc_path: Path
    tst_flags: frozenset
    quarto: dict = field(default_factory=dict)

    @classmethod
    def load(cls, repo: Path = REPO) -> 'Project':
        repo = Path(repo).resolve()
        cfg = configparser.ConfigParser(delimiters=['='], interpolation=None)
        if not cfg.read(repo / 'settings.ini', encoding='utf-8'): raise FileNotFoundError(repo / 'settings.ini')
        s = dict(cfg['DEFAULT'])
        nbs = repo / s.get('nbs_path', 'nbs')
        quarto = {}
        qy = nbs / '_quarto.yml'
        if qy.is_file():
            quarto = yaml.safe_load(qy.read_text(encoding='utf-8')) or {}
            for name in quarto.get('metadata-files', []) or []:
                f = nbs / name
                if f.is_file(): quarto = _deep_merge(quarto, yaml.safe_load(f.read_text(encoding='utf-8')) or {})
        return cls(repo=repo, settings=s, nbs=nbs, lib=repo / s.get('lib_path', s.get('lib_name', '')),
                   doc_path=repo / s.get('doc_path', '_docs'),
                   tst_flags=frozenset(f.lower() for f in s.get('tst_flags', '').split()), quarto=quarto)

    def notebooks(self) -> list:
        "The notebooks nbdev documents: *.ipynb under nbs/ (recursively if `recursive`), minus `_`/`.` names."
        recursive = self.settings.get('recursive', 'False').strip().lower() in ('true', '1', 'yes', 'y')
        out = []
        for d, dirs, files in os.walk(self.nbs):
            dirs[:] = sorted(x for x in dirs if not x.startswith(('_', '.'))) if recursive else []
            out += [Path(d) / f for f in files if f.endswith('.ipynb') and not f.startswith(('_', '.'))]
        return sorted(out, key=lambda p: p.relative_to(self.nbs).as_posix())

    @property
    def site_url(self) -> str:
        "The published site's URL (nbdev writes it into links to documented symbols), with a trailing slash."
        w = self.quarto.get('website', {}) or {}
        url = w.get('site-url') or (self.settings.get('doc_host', '') + self.settings.get('doc_baseurl', ''))
        return url.rstrip('/') + '/' if url else ''


# ---------------------------------------------------------------- nbdev directives and test flags
# The same rules as tests/test_notebooks.py (tests/test_docs.py checks that the two agree).

_DIRECTIVE = re.compile(r'^\s*#\s*\|')
_CELL_MAGIC = re.compile(r'^\s*%%\w+')


def directives(source: str) -> dict:
    "The leading nbdev directives of a code cell, keys lower-cased: {'slow': [], 'eval:': ['false']}."
    out = {}
    for line in source.splitlines():
        if not line.strip() or _CELL_MAGIC.match(line): continue
        if not _DIRECTIVE.match(line): break
        body = _DIRECTIVE.sub('', line, count=1).strip()
        if body.endswith(':'): body = body.replace(':', '')
        parts = body.replace(':', ': ').split()
        if parts: out[parts[0].lower()] = parts[1:]
    return out


def skip_reason(cell, flags) -> str | None:
    "Why nbdev_test (and so this build) does not execute this cell; None if it does."
    if cell.get('cell_type') != 'code': return None
    src = ''.join(cell.get('source', ''))
    d = directives(src)
    hit = sorted(set(flags) & d.keys())
    if hit: return f'#|{hit[0]}'
    if [a.lower() for a in d.get('eval:', [])][:1] == ['false']: return '#|eval: false'
    if 'nbdev_export(' in src: return 'nbdev_export()'
    return None


# ---------------------------------------------------------------- preparing, executing, processing

@contextlib.contextmanager
def _in_project(project: Project):
    "cwd = repo root (nbdev's get_config finds settings.ini from the cwd up) and IN_TEST=1, as nbdev's own docs run."
    old_cwd, old_in_test = os.getcwd(), os.environ.get('IN_TEST')
    os.chdir(project.repo)
    os.environ['IN_TEST'] = '1'
    try: yield
    finally:
        os.chdir(old_cwd)
        if old_in_test is None: os.environ.pop('IN_TEST', None)
        else: os.environ['IN_TEST'] = old_in_test


def _to_nbdev(nb: nbformat.NotebookNode, path: Path):
    from execnb.nbio import dict2nb
    res = dict2nb(json.loads(nbformat.writes(nb)))
    res['path_'] = str(path)
    return res


def _from_nbdev(nb) -> nbformat.NotebookNode:
    from execnb.nbio import nb2dict
    d = nb2dict(nb)
    for c in d['cells']: c.pop('has_sd', None)
    return nbformat.from_dict(d)


def prepare(project: Project, nb_path: Path):
    """The notebook as the docs show it, and the notebook to execute.

    Every cell gets `metadata.docs_build.key`; cells flagged with `tst_flags` (or `#|eval: false`, or calling
    `nbdev_export()`) get `metadata.docs_build.skipped` and are left out of the executed copy. nbdev's
    `add_show_docs` inserts a `show_doc(...)` cell after each exported definition that has none, as `nbdev_docs` does;
    those cells are executed with the rest."""
    from nbdev.processors import add_show_docs, populate_language
    from nbdev.process import NBProcessor
    full = nbformat.read(nb_path, as_version=4)
    for i, c in enumerate(full.cells):
        c.metadata[META] = {'key': f'c{i}'}
        reason = skip_reason(c, project.tst_flags)
        if reason: c.metadata[META]['skipped'] = reason
    with _in_project(project):
        nbd = _to_nbdev(full, nb_path)
        NBProcessor(nb=nbd, procs=[populate_language, add_show_docs], rm_directives=False).process()
    full = _from_nbdev(nbd)
    skipped_by = None
    n_auto = 0
    for c in full.cells:
        if META in c.metadata:
            skipped_by = c.metadata[META].get('skipped')
            continue
        # a show_doc cell that add_show_docs inserted after the exported cell just before it
        c.metadata[META] = {'key': f'sd{n_auto}', 'auto_show_doc': True}
        c['id'] = f'docs-build-sd{n_auto}'      # execnb gave it a random one: keep the fingerprint (--reuse) stable
        if skipped_by: c.metadata[META]['skipped'] = skipped_by
        n_auto += 1
    for c in full.cells: c.metadata.pop('language', None)   # populate_language's; processed again later
    ex = copy.deepcopy(full)
    ex.cells = [c for c in ex.cells if 'skipped' not in c.metadata[META]]
    for c in ex.cells:
        if c.cell_type == 'code': c.outputs, c.execution_count = [], None
    if any(c.cell_type == 'code' and 'show_doc' in c.source for c in ex.cells):
        # nbdev's exec_show_docs imports show_doc before running a notebook's cells; so does this build
        helper = nbformat.v4.new_code_cell('from nbdev.showdoc import show_doc', metadata={META: {'key': 'helper'}},
                                           id='docs-build-helper')
        ex.cells.insert(0, helper)
    if (full.get('nbformat'), full.get('nbformat_minor', 0)) < (4, 5):   # cell ids only exist from nbformat 4.5 on
        for c in full.cells + ex.cells: c.pop('id', None)
    return full, ex


def _kernel_env(project: Project) -> dict:
    "The environment tests/conftest.py's `kernel_env` gives papermill: this venv's python3 kernel, the repo importable."
    env = {k: v for k, v in os.environ.items() if k != 'IN_TEST'}
    bin_dir = str(Path(sys.executable).parent)
    env['PATH'] = os.pathsep.join([bin_dir, env.get('PATH', '')])
    env['JUPYTER_PREFER_ENV_PATH'] = '1'
    env['PYTHONPATH'] = os.pathsep.join([str(project.repo)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    env.setdefault('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
    return env


def _fingerprint(project: Project, ex: nbformat.NotebookNode, parameters: dict | None = None) -> str:
    "Hash of what an execution depends on: the executed cells, papermill parameters, the library, settings.ini."
    h = hashlib.sha256(nbformat.writes(ex).encode() + json.dumps(parameters or {}, sort_keys=True).encode())
    for p in sorted(project.lib.rglob('*.py')) + [project.repo / 'settings.ini']:
        h.update(p.relative_to(project.repo).as_posix().encode() + b'\0' + p.read_bytes())
    return h.hexdigest()


class ExecutionError(RuntimeError): pass


def execute(project: Project, name: str, ex: nbformat.NotebookNode, work: Path, reuse: bool = False,
            timeout: int | None = None, parameters: dict | None = None) -> nbformat.NotebookNode:
    """Run `ex` with papermill in a fresh python3 kernel (cwd nbs/); with `reuse`, keep a previous identical run.

    The tests (tests/test_notebooks.py) and the site build call this with the same `work` folder, so within one
    test session each notebook is executed once and both use that execution."""
    src, out, stamp = work / f'{name}.in.ipynb', work / f'{name}.out.ipynb', work / f'{name}.sha256'
    src.parent.mkdir(parents=True, exist_ok=True)
    fp = _fingerprint(project, ex, parameters)
    if reuse and out.is_file() and stamp.is_file() and stamp.read_text().strip() == fp:
        log(f'{name}: reusing the previous execution '
            f'({out.relative_to(project.repo) if out.is_relative_to(project.repo) else out})')
        return nbformat.read(out, as_version=4)
    stamp.unlink(missing_ok=True)
    nbformat.write(ex, src)
    cmd = [sys.executable, '-m', 'papermill', str(src), str(out), '--kernel', 'python3', '--language', 'python',
           '--cwd', str(project.nbs), '--no-progress-bar', '--log-level', 'WARNING']
    if parameters: cmd += ['-y', json.dumps(parameters)]
    if timeout: cmd += ['--execution-timeout', str(timeout)]
    t0 = time.time()
    res = subprocess.run(cmd, env=_kernel_env(project), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        tail = '\n'.join(res.stdout.strip().splitlines()[-40:])
        raise ExecutionError(f'{tail}\n\nexecuting {name} failed (papermill exit {res.returncode}); the executed copy, '
                             f'with outputs up to the failing cell, is {out}')
    stamp.write_text(fp)
    log(f'{name}: executed in {time.time() - t0:.1f}s')
    return nbformat.read(out, as_version=4)


def merge_outputs(full: nbformat.NotebookNode, executed: nbformat.NotebookNode) -> nbformat.NotebookNode:
    "`full` with the outputs of the executed cells; skipped cells keep whatever outputs the notebook saved."
    done = {c.metadata.get(META, {}).get('key'): c for c in executed.cells}
    out = copy.deepcopy(full)
    for c in out.cells:
        if c.cell_type != 'code': continue
        key = c.metadata[META]['key']
        if 'skipped' in c.metadata[META]: continue
        e = done.get(key)
        if e is None: raise ExecutionError(f'cell {key} is missing from the executed notebook')
        c.outputs, c.execution_count = e.get('outputs', []), e.get('execution_count')
    return out


_MD_LINK = re.compile(r'!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\((?:[^()\s]|\([^()\s]*\))*(?:\s+"[^"]*")?\)')


def _linkify(nl, md: str) -> str:
    "nbdev's `NbdevLookup.linkify`, except inside the text of existing markdown links."
    in_fence, lines = False, md.split('\n')
    for i, l in enumerate(lines):
        if l.startswith('```'): in_fence = not in_fence
        elif not l.startswith('    ') and not in_fence:
            parts, links = _MD_LINK.split(l), _MD_LINK.findall(l)
            lines[i] = ''.join(nl.link_line(p) + (links[j] if j < len(links) else '') for j, p in enumerate(parts))
    return '\n'.join(lines)


def add_links(cell):
    """nbdev's `add_links` processor (backticked symbols become links to their documentation), with two fixes:
    it does not link inside the text of an existing link (nbdev would nest links: `[the `sym` page](x.ipynb)`), and
    in markdown outputs (show_doc) it skips code blocks, as it already does in markdown cells (nbdev would write
    `[`sym`](https://...)` into the comments of a signature)."""
    from nbdev.doclinks import NbdevLookup
    nl = NbdevLookup()
    if cell.cell_type == 'markdown' and cell.source: cell.source = _linkify(nl, cell.source)
    for o in cell.get('outputs', []):
        if hasattr(o, 'data') and hasattr(o['data'], 'text/markdown'):
            md = o.data['text/markdown']
            o.data['text/markdown'] = _linkify(nl, ''.join(md) if isinstance(md, list) else md).splitlines(
                keepends=True)


def nbdev_process(project: Project, nb: nbformat.NotebookNode, nb_path: Path):
    """nbdev's documentation processors, as `nbdev_docs` runs them (settings' `procs`/`skip_procs` honoured), less
    `add_show_docs` (done before execution) and `exec_show_docs` (the execution ran every cell)."""
    from nbdev.process import NBProcessor
    from nbdev.processors import FilterDefaults, add_show_docs, exec_show_docs
    with _in_project(project):
        nbd = _to_nbdev(nb, nb_path)
        for c in nbd.cells:
            if c.metadata.get(META, {}).get('auto_show_doc'): c.has_sd = True
        from nbdev import processors
        procs = [add_links if p is processors.add_links else p
                 for p in FilterDefaults().procs() if p not in (add_show_docs, exec_show_docs)]
        NBProcessor(nb=nbd, procs=procs).process()
    return nbd


# ---------------------------------------------------------------- the whole build

def work_dir(project: Project) -> Path:
    "Where executed notebooks are kept (git-ignored), for `--reuse` and for the tests to share."
    return project.repo / '_proc' / 'docs_build'


def execution_name(project: Project, nb_path: Path) -> str:
    "The file-name stem of a notebook's execution in `work_dir`."
    return nb_path.relative_to(project.nbs).with_suffix('').as_posix().replace('/', '__')


def build_site(out: Path | str | None = None, repo: Path | str = REPO, reuse: bool = False, jobs: int | None = None,
               timeout: int | None = None, only: list | None = None) -> Path:
    """Build the site into `out` (default: settings.ini's doc_path, `_docs/`); returns its path.

    `only`: glob patterns (`00_*`, `index.ipynb`): build just the matching notebooks' pages (a quick preview)."""
    from . import render
    t0 = time.time()
    project = Project.load(Path(repo))
    out = Path(out).resolve() if out else project.doc_path
    work = work_dir(project)
    nbs = project.notebooks()
    if only:
        nbs = [p for p in nbs if any(fnmatch.fnmatch(p.relative_to(project.nbs).as_posix(), pat) or
                                     fnmatch.fnmatch(p.relative_to(project.nbs).with_suffix('').as_posix(), pat)
                                     for pat in only)]
    if not nbs: raise FileNotFoundError(f'no notebooks in {project.nbs}' + (f' match {only}' if only else ''))
    names = {p: p.relative_to(project.nbs).with_suffix('').as_posix() for p in nbs}
    prepared = {}
    for p in nbs:
        prepared[p] = prepare(project, p)
        skipped = [c.metadata[META]['skipped'] for c in prepared[p][0].cells if 'skipped' in c.metadata[META]]
        if skipped:
            log(f'{names[p]}: {len(skipped)} cell(s) shown but not executed ({", ".join(sorted(set(skipped)))})')
    jobs = jobs or max(1, min(len(nbs), os.cpu_count() or 1, 4))
    log(f'executing {len(nbs)} notebooks with papermill ({jobs} at a time)')
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        futs = {p: pool.submit(execute, project, execution_name(project, p), prepared[p][1], work, reuse, timeout)
                for p in nbs}
        executed = {p: f.result() for p, f in futs.items()}
    pages = []
    for p in nbs:
        merged = merge_outputs(prepared[p][0], executed[p])
        pages.append(render.Page.from_nbdev(project, p, names[p], nbdev_process(project, merged, p)))
    # written aside, then swapped in whole: a failed build leaves the previous site (temporary folder: in _proc/,
    # git-ignored, when the site goes into the repo; else next to it, on the same file system for the rename)
    try: out.relative_to(project.repo); scratch = work
    except ValueError: scratch = out.parent
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix='.site-', dir=scratch))
    try:
        render.Site(project, pages).write(tmp)
        if out.exists(): shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists(): shutil.rmtree(tmp, ignore_errors=True)
    log(f'site written to {out} ({len(pages)} pages) in {time.time() - t0:.1f}s')
    return out
