"""The documentation site: built offline from the notebooks (`python -m docs_build`) and checked in headless Chromium.

* `site` (session fixture): builds the whole site once into _docs/ (every notebook executed by papermill, nbdev's doc
  processors, HTML), as `python -m docs_build` does.
* `test_site_in_chromium`: every page loads in Chromium (file://, no network) with no console error, failed request,
  broken internal link/image/anchor or unrendered formula; the `dasr` API entry is on 00_dasr.html; a screenshot of
  the home page is saved as _docs/screenshot-home.png.
* static checks of the built pages (directives and hidden cells gone, notebook links turned into page links, an API
  entry for every exported definition, nothing loaded from the network), and an end-to-end build of a tiny project
  that covers what the daq notebooks do not (a `figures/` folder, `#|slow` cells, callouts, attachments).
* the checker itself: it must catch an injected console.error, an exception, a missing image, a broken link.

Chromium is the Debian package `chromium` (.ci/run installs it). Without it these browser tests fail in CI (CI=true)
and are skipped elsewhere. Each notebook is executed once per test session, for this build and tests/test_notebooks.py
alike (DAQ_DOCS_REUSE=1 also reuses the executions of earlier sessions whose cells, library and settings are unchanged).
"""
import ast
import base64
import html
import os
import re
import shutil
import struct
import sys
import warnings
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path: sys.path.insert(0, str(REPO))

from docs_build import build as B                              # noqa: E402
from docs_build.browser import Chromium, check_site, find_chromium   # noqa: E402
from docs_build.render import pandoc_slug                        # noqa: E402

IN_CI = os.environ.get('CI', '').strip().lower() in ('1', 'true', 'yes')


def need_chromium() -> str:
    path = find_chromium()
    if path: return path
    msg = ('Chromium is not installed (looked for $CHROMIUM, /usr/bin/chromium, /usr/bin/chromium-browser, '
           '/usr/bin/google-chrome): the documentation site cannot be checked in a browser. '
           'Install it with `apt-get update && apt-get install -y chromium` (.ci/run does this).')
    if IN_CI: pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


@pytest.fixture(scope='session')
def browser():
    with Chromium(need_chromium()) as b: yield b


@pytest.fixture(scope='session')
def site() -> Path:
    """The site, built once per session into settings.ini's doc_path (_docs/), from this session's notebook
    executions (shared with tests/test_notebooks.py; see tests/conftest.py's `fresh_notebook_executions`)."""
    return B.build_site(reuse=True)


@pytest.fixture(scope='session')
def project() -> B.Project:
    return B.Project.load(REPO)


def page_text(path: Path) -> str:
    "A page's visible text, roughly: tags dropped, entities decoded, whitespace collapsed."
    s = re.sub(r'<(script|style)\b.*?</\1>', ' ', path.read_text(encoding='utf-8'), flags=re.S)
    return re.sub(r'\s+', ' ', html.unescape(re.sub(r'<[^>]+>', '', s)))


def norm(s: str) -> str:
    return re.sub(r'\s+', ' ', s).strip()


def png_size(path: Path):
    data = path.read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n', f'{path} is not a PNG'
    return struct.unpack('>II', data[16:24])


# ---------------------------------------------------------------- the built site, statically

def test_every_notebook_has_a_page(site, project):
    names = [p.relative_to(project.nbs).with_suffix('.html').as_posix() for p in project.notebooks()]
    missing = [n for n in names if not (site / n).is_file()]
    assert not missing, f'no page for {missing} in {site}'
    assert 'index.html' in names


def test_sidebar_follows_sidebar_yml(site, project):
    "The sidebar lists sidebar.yml's pages in its order, then any notebook it does not list."
    import yaml
    listed = [c for c in yaml.safe_load((project.nbs / 'sidebar.yml').read_text())['website']['sidebar']['contents']
              if isinstance(c, str)]
    hrefs = re.findall(r'<a href="([^"]+)"',
                       re.search(r'<nav class="sidebar".*?</nav>', (site / 'index.html').read_text(), re.S).group(0))
    expected = [Path(c).with_suffix('.html').as_posix() for c in listed if (project.nbs / c).is_file()]
    assert hrefs[:len(expected)] == expected, hrefs
    assert sorted(hrefs) == sorted(p.relative_to(project.nbs).with_suffix('.html').as_posix()
                                   for p in project.notebooks())


def test_notebook_links_become_page_links(site):
    pages = sorted(site.rglob('*.html'))
    ipynb = [(p.name, h) for p in pages for h in re.findall(r'href="([^"]*\.ipynb(?:#[^"]*)?)"', p.read_text())]
    assert not ipynb, f'links still pointing at notebooks: {ipynb}'
    index = (site / 'index.html').read_text()
    assert 'href="00_dasr.html"' in index, 'index.ipynb links 00_dasr.ipynb; its page must link 00_dasr.html'


def test_directives_and_hidden_cells_are_gone(site, project):
    "No `#|` line in any displayed code, and no `#|hide` or `#|export` cell's source on any page (as nbdev shows them)."
    problems = []
    for nb_path in project.notebooks():
        page = site / nb_path.relative_to(project.nbs).with_suffix('.html')
        raw = page.read_text(encoding='utf-8')
        for code in re.findall(r'<pre class="sourceCode[^"]*"><code[^>]*>(.*?)</code></pre>', raw, re.S):
            text = html.unescape(re.sub(r'<[^>]+>', '', code))
            bad = [l for l in text.splitlines() if re.match(r'\s*#\s*\|', l)]
            if bad: problems.append(f'{page.name}: directive shown: {bad[0]!r}')
        text = norm(page_text(page))
        for c in nbformat.read(nb_path, as_version=4).cells:
            d = B.directives(c.source) if c.cell_type == 'code' else {}
            if not ({'hide', 'export', 'exporti', 'default_exp'} & d.keys()): continue
            body = norm('\n'.join(l for l in c.source.splitlines() if not re.match(r'\s*#\s*\|', l)))
            if len(body) > 20 and body in text:
                problems.append(f'{page.name}: hidden/exported source shown: {body[:70]!r}')
    assert not problems, '\n'.join(problems)


def _exported_names(nb_path: Path) -> list:
    "Public functions and classes defined in a notebook's `#|export` cells (nbdev documents each one)."
    names = []
    for c in nbformat.read(nb_path, as_version=4).cells:
        if c.cell_type != 'code' or not ({'export', 'exports'} & B.directives(c.source).keys()): continue
        if 'hide' in B.directives(c.source): continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')          # a notebook's own invalid escapes are not this test's business
                tree = ast.parse(c.source)
        except SyntaxError: continue
        names += [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                  and not n.name.startswith('_')]
    return names


def test_every_exported_definition_has_an_api_entry(site, project):
    "nbdev's show_doc entry (a heading with the name, then its signature) for each exported public definition."
    missing = []
    for nb_path in project.notebooks():
        raw = (site / nb_path.relative_to(project.nbs).with_suffix('.html')).read_text(encoding='utf-8')
        # a section heading may hold the bare id (`## `quantize_model``); the entry's is then `quantize_model-1`
        entries = {re.sub(r'-\d+$', '', i) for i in re.findall(
            r'<div class="cell show-doc">(?:(?!<div class="cell[ "]).)*?<h\d id="([^"]+)"', raw, re.S)}
        missing += [f'{nb_path.name}: {n}' for n in _exported_names(nb_path) if pandoc_slug(n) not in entries]
    assert not missing, f'no show_doc entry for: {missing}'


def test_dasr_api_entry(site):
    "00_dasr.html has nbdev's show_doc entry for `dasr`: its heading inside a .show-doc cell, then its signature."
    raw = (site / '00_dasr.html').read_text(encoding='utf-8')
    at = raw.find('<h3 id="dasr">dasr</h3>')
    assert at >= 0, 'no <h3 id="dasr"> on 00_dasr.html'
    assert raw.rfind('<div class="cell', 0, at) == raw.rfind('<div class="cell show-doc">', 0, at), \
        'the dasr heading is not inside a show_doc cell'
    sig = html.unescape(re.sub(r'<[^>]+>', '', re.search(r'<pre.*?</pre>', raw[at:], re.S).group(0)))
    assert sig.lstrip().startswith('def dasr('), sig[:200]


def test_nothing_comes_from_the_network(site):
    "Scripts, styles, fonts and images are all files of the site (it must work offline): no CDN, no MathJax."
    bad = []
    for p in site.rglob('*.html'):
        s = p.read_text(encoding='utf-8')
        bad += [f'{p.name}: {u}' for u in re.findall(
            r'<(?:script|link|img|iframe|source)\b[^>]*\b(?:src|href)="((?:https?:)?//[^"]*)"', s)]
        bad += [f'{p.name}: mentions {w}' for w in ('mathjax', 'cdn.jsdelivr', 'unpkg.com', 'cdnjs') if w in s.lower()]
    for p in site.rglob('*.css'):
        bad += [f'{p.name}: {u}'
                for u in re.findall(r'url\(\s*["\']?((?:https?:)?//[^)"\']*)', p.read_text(encoding='utf-8'))]
    assert not bad, bad


def test_no_noise_placeholders_or_raw_tex(site, project):
    """What a reader sees: no stderr output (warnings, logs, progress bars), no papermill `parameters` cell, no link
    into the repository (this offline build cannot check it), no TeX left raw outside math (e.g. in API signatures)."""
    problems, repo_url = [], project.settings.get('git_url', '').rstrip('/')
    for p in sorted(site.rglob('*.html')):
        raw = p.read_text(encoding='utf-8')
        if 'cell-output-stderr' in raw: problems.append(f'{p.name}: stderr output shown')
        for w in ('Warning:', 'TqdmWarning', 'No CUDA runtime'):
            if w in page_text(p): problems.append(f'{p.name}: {w!r} on the page')
        if repo_url and repo_url in raw: problems.append(f'{p.name}: links {repo_url}')
        if 'papermill parameters' in page_text(p): problems.append(f'{p.name}: the parameters cell is shown')
        no_math = re.sub(r'<(span|div) class="math[^"]*">.*?</\1>', ' ', raw, flags=re.S)
        tex = re.findall(r'\$\\[a-zA-Z]+', html.unescape(re.sub(r'<[^>]+>', '', no_math)))
        if tex: problems.append(f'{p.name}: raw TeX {tex[:3]}')
    assert not problems, '\n'.join(problems)


def test_figures_folder_is_part_of_the_site(site):
    figures = REPO / 'figures'
    if not figures.is_dir(): pytest.skip('no figures/ folder at the repository root (yet)')
    missing = [f.relative_to(REPO).as_posix() for f in figures.rglob('*') if f.is_file() and
               not (site / f.relative_to(REPO)).is_file()]
    assert not missing, f'not copied into the site: {missing}'


# ---------------------------------------------------------------- the built site, in Chromium

def test_site_in_chromium(site, browser, project):
    shot = site / 'screenshot-home.png'
    shot.unlink(missing_ok=True)
    rep = check_site(site, screenshot=shot, browser=browser)
    assert not rep.problems, f'{len(rep.problems)} problems in the built site:\n' + '\n'.join(rep.problems)
    assert 'index.html' in rep.pages and '00_dasr.html' in rep.pages, sorted(rep.pages)
    dasr = [e for e in rep.pages['00_dasr.html'].info['showDocs'] if e['id'] == 'dasr']
    assert dasr and dasr[0]['text'] == 'dasr' and 'def dasr(' in dasr[0]['code'], \
        rep.pages['00_dasr.html'].info['showDocs']
    info = rep.pages['00_dasr.html'].info
    assert info['math'] > 10 and info['katex'] == info['math'], info['math']
    assert info['images'] >= 1, 'the DASR page plots its forward and backward (a matplotlib figure)'
    assert len(rep.pages['index.html'].info['sidebar']) == len(project.notebooks()), \
        rep.pages['index.html'].info['sidebar']
    w, h = png_size(shot)
    assert (w, h) == (1280, 900) and shot.stat().st_size > 20_000, (w, h, shot.stat().st_size)


def test_search_finds_api_entries(site, browser):
    "The search box (offline: its index is a script of the site) finds an API entry by name."
    js = '''(() => { const i = document.getElementById('search-input'); i.value = 'dasr_grad';
                     i.dispatchEvent(new Event('input'));
                     return [...document.querySelectorAll('#search-results a')].map(a => a.getAttribute('href'));
                   })()'''
    v = browser.visit((site / 'index.html').as_uri(), script=js)
    assert not v.problems, v.problems
    assert '00_dasr.html#dasr_grad' in v.info['script'][:3], v.info['script']


# ---------------------------------------------------------------- the checker catches what it must

def _write(path: Path, body: str, head: str = '') -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">{head}</head>'
                    f'<body>{body}</body></html>', encoding='utf-8')
    return path


def test_checker_catches_console_errors_and_broken_references(tmp_path, browser):
    good = _write(tmp_path / 'good' / 'index.html', '<p id="x">fine</p><a href="#x">here</a><a href="https://example.invalid/">out</a>')
    assert browser.visit(good.as_uri()).problems == []
    rep = check_site(good.parent, browser=browser)
    assert rep.problems == [], rep.problems

    err = _write(tmp_path / 'err.html', '<script>console.error("injected error 42")</script>')
    v = browser.visit(err.as_uri())
    assert any('injected error 42' in p for p in v.console_errors), v.console_errors

    late = _write(tmp_path / 'late.html', '<script>setTimeout(() => console.error("late error 7"), 50)</script>')
    assert any('late error 7' in p for p in browser.visit(late.as_uri()).console_errors)

    exc = _write(tmp_path / 'exc.html', '<script>null.boom()</script>')
    assert any('uncaught exception' in p and 'TypeError' in p for p in browser.visit(exc.as_uri()).console_errors)

    bad = tmp_path / 'bad'
    _write(bad / 'index.html', '<img src="missing.png" alt="x"><a href="nowhere.html">x</a>'
                               '<a href="other.html#nope">y</a><script src="gone.js"></script>')
    _write(bad / 'other.html', '<h2 id="yes">yes</h2>')
    rep = check_site(bad, browser=browser)
    text = '\n'.join(rep.problems)
    assert 'missing.png' in text and 'ERR_FILE_NOT_FOUND' in text, text
    assert "broken link 'nowhere.html'" in text, text
    assert "no element with id 'nope'" in text, text
    assert "broken script 'gone.js'" in text, text

    # a formula KaTeX cannot parse, with the site's own KaTeX and site.js: reported as a console error
    bad_math = tmp_path / 'math'
    shutil.copytree(REPO / 'docs_build' / 'vendor' / 'katex', bad_math / 'katex')
    shutil.copy2(REPO / 'docs_build' / 'assets' / 'site.js', bad_math / 'site.js')
    _write(bad_math / 'index.html', '<p><span class="math inline">x^2</span> '
                                    '<span class="math inline">\\frac{1}{</span></p>'
                                    '<script src="katex/katex.min.js"></script><script src="site.js"></script>')
    rep = check_site(bad_math, browser=browser)
    assert any('KaTeX could not render' in p for p in rep.problems), rep.problems
    assert rep.pages['index.html'].info['katex'] == 1, rep.pages['index.html'].info


# ---------------------------------------------------------------- end to end on a tiny project

_PNG = base64.b64decode('iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP8z8DAwMDAxMDAwMDAAAAN'
                        'HQEDasKb6QAAAABJRU5ErkJggg==')


def _tiny_project(root: Path) -> Path:
    (root / 'nbs').mkdir(parents=True)
    (root / 'figures').mkdir()
    (root / 'figures' / 'chart.png').write_bytes(_PNG)
    (root / 'figures' / 'unused.svg').write_text('<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>')
    (root / 'settings.ini').write_text('[DEFAULT]\nrepo = tiny\nlib_name = tiny\nlib_path = tiny\nnbs_path = nbs\n'
                                       'doc_path = _docs\nrecursive = True\ntst_flags = slow\ntitle = tiny\n'
                                       'version = 0.0.1\nuser = me\nauthor = me\nauthor_email = me@example.invalid\n'
                                       'copyright = me\ndescription = tiny\nbranch = main\n'
                                       'doc_host = https://me.github.io\ndoc_baseurl = /tiny\n'
                                       'git_url = https://github.com/me/tiny\nkeywords = x\n'
                                       'language = English\nstatus = 1\nlicense = apache2\nmin_python = 3.10\n'
                                       'audience = Developers\ncustom_sidebar = False\n')
    (root / 'nbs' / 'sidebar.yml').write_text('website:\n  sidebar:\n    contents:\n'
                                              '      - index.ipynb\n      - 01_b.ipynb\n')
    (root / 'nbs' / '_quarto.yml').write_text('project:\n  type: website\nformat:\n  html:\n    css: styles.css\n'
                                              'website:\n  title: "tiny"\nmetadata-files: [sidebar.yml]\n')
    (root / 'nbs' / 'styles.css').write_text('.cell { margin-bottom: 1rem; }\n')
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    ks = {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}}
    index = nbformat.v4.new_notebook(metadata=ks, cells=[
        md('# Tiny\n> A tiny project, built by the tests'),
        code('#|hide\nfrom nbdev.showdoc import show_doc\nSECRET_HIDDEN_MARKER = 1'),
        md('Math $a^2 + b^2 = c^2$ and\n$$\\int_0^1 x\\,dx = \\tfrac12$$\n\nSee [page B](01_b.ipynb#section-two) and '
           '![chart](../figures/chart.png)'),
        code('#|export\ndef tiny_fn(x:int=1 # the input\n           )->int:\n'
             '    "Return `x` plus one, $x+1$."\n    return x + 1'),
        code('print(tiny_fn(41))'),
        code('#|slow\nprint("SLOW_CELL_RAN")'),
        code('import matplotlib.pyplot as plt\nplt.plot([0, 1], [1, 0]); plt.show()'),
    ])
    b = nbformat.v4.new_notebook(metadata=ks,
                                 cells=[md('# Page B'), md('## Section two\nBack to [home](index.ipynb).')])
    nbformat.write(index, root / 'nbs' / 'index.ipynb')
    nbformat.write(b, root / 'nbs' / '01_b.ipynb')
    return root


def test_tiny_project_end_to_end(tmp_path, browser):
    "Hidden cells, directives, show_doc, math, figures/, #|slow cells, page links: built and checked."
    root = _tiny_project(tmp_path / 'tiny')
    out = B.build_site(repo=root, jobs=2)
    assert out == root / '_docs'
    index = (out / 'index.html').read_text()
    text = page_text(out / 'index.html')
    assert 'SECRET_HIDDEN_MARKER' not in index and '#|' not in text.replace('(#|slow)', '')
    assert 'return x + 1' not in text, 'an #|export cell is not shown (nbdev shows its show_doc entry instead)'
    assert re.search(r'<div class="cell show-doc">.*?<h3 id="tiny_fn">tiny_fn</h3>', index, re.S)
    assert '42' in text and 'SLOW_CELL_RAN' in text and 'Not executed when these pages were built' in text
    assert not re.search(r'cell-output[^>]*><pre><code>SLOW_CELL_RAN', index), 'the #|slow cell must not have run'
    assert 'href="01_b.html#section-two"' in index and 'src="figures/chart.png"' in index
    assert (out / 'figures' / 'chart.png').read_bytes() == _PNG and (out / 'figures' / 'unused.svg').is_file()
    assert (out / 'styles.css').is_file()
    assert 'href="index.html"' in (out / '01_b.html').read_text()
    rep = check_site(out, screenshot=out / 'screenshot-home.png', browser=browser)
    assert not rep.problems, rep.problems
    info = rep.pages['index.html'].info
    # two formulas in the markdown, one in tiny_fn's docstring
    assert info['math'] == 3 and info['katex'] == 3, info
    assert info['images'] >= 2, info                           # figures/chart.png and the matplotlib plot
    assert [e['id'] for e in info['showDocs']] == ['tiny_fn']
    assert info['sidebar'] == ['Tiny', 'Page B']
