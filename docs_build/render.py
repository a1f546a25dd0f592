"""HTML for nbdev-processed notebooks: pages, sidebar, table of contents, links, figures, math and search.

What Quarto would do with the processed notebooks, for the features these notebooks use: cell options (`#| echo`,
`output`, `include`, `fig-cap`, `fig-alt`), `output: asis` markdown (show_doc), pandoc-style heading ids (nbdev's
symbol links point at them), link attributes (`[text](url){target="_blank"}`), `$...$`/`$$...$$` math. Pages are
written flat as `<notebook name>.html` (`00_dasr.ipynb` -> `00_dasr.html`)."""
from __future__ import annotations

import base64
import html
import json
import os
import posixpath
import re
import shutil
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from markdown_it import MarkdownIt
from mdit_py_plugins.attrs import attrs_plugin
from mdit_py_plugins.dollarmath import dollarmath_plugin
from mdit_py_plugins.footnote import footnote_plugin
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.style import Style
from pygments.token import (Comment, Error, Generic, Keyword, Name, Number, Operator, Punctuation, String, Text,
                            Token)
from pygments.util import ClassNotFound

HERE = Path(__file__).resolve().parent
ASSETS, KATEX = HERE / 'assets', HERE / 'vendor' / 'katex'
LIBS = 'site_libs'     # where the site's own CSS/JS and KaTeX go (Quarto's name for the same folder)

_ANSI = re.compile(r'\x1B(?:[@-Z\\-_]|\[[0-?]*[ -/]*[@-~])')
_OPTION = re.compile(r'^\s*#\s*\|\s*([\w-]+)\s*:(.*)$')
_DIRECTIVE_LINE = re.compile(r'^\s*#\s*\|')
_SCHEME = re.compile(r'^[a-zA-Z][a-zA-Z0-9+.-]*:')


def _text(v) -> str:
    return ''.join(v) if isinstance(v, list) else (v or '')


def esc(s: str) -> str:
    return html.escape(s, quote=True)


# ---------------------------------------------------------------- code highlighting (Quarto's "arrow" colours)

class ArrowStyle(Style):
    "Pygments colours close to Quarto's default `arrow` highlighting theme."
    background_color = '#f6f7f9'
    styles = {
        Token: '#111111', Comment: 'italic #5E5E5E', Keyword: '#003B4F', Keyword.Namespace: '#00769E',
        Keyword.Constant: '#8f5902', Keyword.Type: '#AD0000', Name.Builtin: '#4758AB', Name.Function: '#4758AB',
        Name.Class: '#4758AB', Name.Decorator: '#4758AB', Name.Exception: '#AD0000', Name.Namespace: '#00769E',
        Name.Attribute: '#657422', Name.Builtin.Pseudo: '#8f5902', String: '#20794D', String.Doc: 'italic #5E5E5E',
        String.Escape: '#5E5E5E', Number: '#AD0000', Operator: '#5E5E5E', Operator.Word: '#003B4F',
        Punctuation: '#5E5E5E', Generic.Prompt: '#5E5E5E', Generic.Output: '#5E5E5E', Error: '#AD0000',
        Generic.Deleted: '#AD0000', Generic.Inserted: '#20794D', Generic.Heading: 'bold', Generic.Emph: 'italic',
        Generic.Strong: 'bold', Text: '#111111',
    }


_FORMATTER = HtmlFormatter(style=ArrowStyle, nowrap=True)


def highlight_code(code: str, lang: str | None) -> str:
    lang = (lang or '').strip().lower()
    try: lexer = get_lexer_by_name({'py': 'python', 'sh': 'bash', 'shell': 'bash'}.get(lang, lang) or 'text')
    except ClassNotFound: lexer = get_lexer_by_name('text')
    return highlight(code, lexer, _FORMATTER).rstrip('\n')


def code_block(code: str, lang: str | None) -> str:
    cls = esc(lang or 'text')
    return (f'<div class="sourceCode"><pre class="sourceCode {cls}"><code class="sourceCode {cls}">'
            f'{highlight_code(code, lang)}</code></pre></div>')


# ---------------------------------------------------------------- markdown

def pandoc_slug(text: str) -> str:
    "Pandoc's automatic identifier (what Quarto gives a heading, and what nbdev's symbol links point at)."
    s = ''.join(ch for ch in text if ch.isalnum() or ch in '_-.' or ch.isspace())
    s = re.sub(r'\s+', '-', s.strip()).lower()
    i = next((i for i, ch in enumerate(s) if ch.isalpha()), len(s))
    return s[i:] or 'section'


def _inline_text(tok) -> str:
    out = []
    for c in tok.children or []:
        if c.type in ('text', 'code_inline', 'math_inline', 'math_inline_double'): out.append(c.content)
        elif c.type in ('softbreak', 'hardbreak'): out.append(' ')
        elif c.type == 'html_inline': pass
        elif c.children: out.append(_inline_text(c))
    return ''.join(out)


def _div_attrs(spec: str):
    "Classes, id and key=value pairs of a pandoc attribute list like `.cls #x key=\"v\"`."
    classes, ident, kv = [], None, {}
    for m in re.finditer(r'([\w-]+)=(?:"([^"]*)"|\'([^\']*)\'|(\S+))|\.([\w-]+)|#([\w-]+)', spec):
        if m.group(5): classes.append(m.group(5))
        elif m.group(6): ident = m.group(6)
        elif m.group(1): kv[m.group(1)] = next(g for g in m.group(2, 3, 4) if g is not None)
    return classes, ident, kv


def make_markdown() -> MarkdownIt:
    md = (MarkdownIt('commonmark', {'html': True, 'typographer': False})
          .enable(['table', 'strikethrough'])
          .use(attrs_plugin)
          .use(footnote_plugin)
          .use(dollarmath_plugin, allow_space=False, allow_digits=False, double_inline=True))
    rules = md.add_render_rule
    rules('math_inline', lambda self, t, i, o, e: f'<span class="math inline">{esc(t[i].content)}</span>')
    rules('math_inline_double', lambda self, t, i, o, e: f'<span class="math display">{esc(t[i].content)}</span>')
    rules('math_block', lambda self, t, i, o, e: f'<div class="math display">{esc(t[i].content)}</div>\n')
    rules('math_block_label', lambda self, t, i, o, e: f'<div class="math display">{esc(t[i].content)}</div>\n')
    rules('fence', lambda self, t, i, o, e:
          code_block(t[i].content, t[i].info.split()[0] if t[i].info else None) + '\n')
    rules('code_block', lambda self, t, i, o, e: code_block(t[i].content, None) + '\n')
    return md


_MD = make_markdown()


# ---------------------------------------------------------------- pages

@dataclass
class Page:
    src: Path            # the notebook
    name: str            # its path under nbs/ without .ipynb: `00_dasr`, `sub/x`
    title: str
    description: str
    cells: list
    nbdev_html: str      # the file nbdev/Quarto would write (`dasr.html`): nbdev's symbol links point there
    frontmatter: dict = field(default_factory=dict)

    @property
    def href(self) -> str: return self.name + '.html'

    @classmethod
    def from_nbdev(cls, project, path: Path, name: str, nb) -> 'Page':
        fm = dict(getattr(nb, 'frontmatter_', {}) or {})
        cells = [c for c in nb.cells if not (c.cell_type == 'raw' and _text(c.source).lstrip().startswith('---'))]
        sub = posixpath.dirname(name)
        nbdev_html = posixpath.join(sub, fm.get('output-file') or posixpath.basename(name) + '.html')
        return cls(src=path, name=name, title=str(fm.get('title') or posixpath.basename(name)),
                   description=str(fm.get('description') or ''), cells=cells, nbdev_html=nbdev_html, frontmatter=fm)


class PageContext:
    "State while one page is rendered: heading ids, table of contents, figures, and link resolution."

    def __init__(self, site: 'Site', page: Page, out: Path):
        self.site, self.page, self.out = site, page, out
        self.ids, self.toc = set(), []
        self.files_dir = page.name + '_files'

    # -- markdown with heading ids
    def markdown(self, src: str, toc: bool = True) -> str:
        env = {}
        tokens = _MD.parse(src, env)
        for i, t in enumerate(tokens):
            if t.type != 'heading_open': continue
            inline = tokens[i + 1]
            m = re.search(r'\s*\{([^}]*)\}\s*$', inline.content)
            ident = None
            if m and ('#' in m.group(1) or '.' in m.group(1)):
                classes, ident, _ = _div_attrs(m.group(1))
                if inline.children and inline.children[-1].type == 'text':
                    inline.children[-1].content = re.sub(r'\s*\{[^}]*\}\s*$', '', inline.children[-1].content)
                if classes: t.attrSet('class', ' '.join(classes))
            text = _inline_text(inline)
            ident = self.unique_id(ident or pandoc_slug(text))
            t.attrSet('id', ident)
            level = int(t.tag[1])
            if toc and level in (2, 3): self.toc.append((level, ident, text))
        return self.rewrite_refs(_MD.renderer.render(tokens, _MD.options, env))

    def unique_id(self, ident: str) -> str:
        base, n = ident, 0
        while ident in self.ids:
            n += 1
            ident = f'{base}-{n}'
        self.ids.add(ident)
        return ident

    # -- links and files
    def rewrite_refs(self, fragment: str) -> str:
        "Every href/src of the HTML `fragment` resolved: notebooks to pages, local files copied into the site."
        def attr(m):
            q = m.group(2)
            return f'{m.group(1)}={q}{esc(self.resolve(html.unescape(m.group(3))))}{q}'

        def tag(m):
            return re.sub(r'''(?<=\s)(href|src|poster|data)=(["'])(.*?)\2''', attr, m.group(0), flags=re.S)
        return re.sub(r'<(?:a|img|source|video|audio|iframe|embed|object|link|script|track)\b[^>]*>', tag, fragment,
                      flags=re.I | re.S)

    def resolve(self, url: str) -> str:
        "A link or file reference as the site resolves it (notebooks to pages, local files copied)."
        return self.site.resolve(url, self.page)

    def save_file(self, data: bytes, ext: str, stem: str) -> str:
        "Write `data` under `<page>_files/figure-html/` and return its URL relative to the page."
        rel = f'{self.files_dir}/figure-html/{stem}{ext}'
        dst = self.out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
        return self.site.rel_url(rel, self.page)


def cell_options(source: str):
    "Quarto cell options (`#| key: value` lines at the top) and the code without any `#|` line."
    lines = source.split('\n')
    opts, i = {}, 0
    while i < len(lines) and (not lines[i].strip() or _DIRECTIVE_LINE.match(lines[i])):
        m = _OPTION.match(lines[i])
        if m:
            try: opts[m.group(1)] = yaml.safe_load(m.group(2).strip() or 'null')
            except yaml.YAMLError: opts[m.group(1)] = m.group(2).strip()
        i += 1
    code = '\n'.join(lines[i:])
    return opts, code.strip('\n')


def _stream_text(s: str) -> str:
    "Terminal text as it ends up on screen: ANSI codes removed, carriage returns overwrite the line."
    s = _ANSI.sub('', s).replace('\r\n', '\n')
    return '\n'.join(l.rsplit('\r', 1)[-1] if '\r' in l.rstrip('\r') else l.rstrip('\r') for l in s.split('\n'))


_SOURCE_LINK = re.compile(r'\[source\]\([^)\s]+\)(\{[^}]*\})?\n*')

_MIME_ORDER = ['text/html', 'image/svg+xml', 'image/png', 'image/jpeg', 'image/gif', 'text/markdown', 'text/latex',
               'text/plain']


def render_outputs(ctx: PageContext, cell, opts: dict, cell_no: int) -> list:
    out, asis = [], opts.get('output') == 'asis'
    outputs = list(cell.get('outputs', []) or [])
    merged = []                     # consecutive stream outputs of one stream read as one
    for o in outputs:
        if o.get('output_type') == 'stream' and merged and merged[-1].get('output_type') == 'stream' \
                and merged[-1].get('name') == o.get('name'):
            merged[-1] = dict(merged[-1], text=_text(merged[-1]['text']) + _text(o.get('text')))
        else: merged.append(dict(o))
    for k, o in enumerate(merged, 1):
        t = o.get('output_type')
        if t == 'stream':
            if o.get('name') == 'stderr': continue      # warnings, logs, progress bars: noise on a documentation page
            txt = _stream_text(_text(o.get('text'))).rstrip('\n')
            if txt: out.append(f'<div class="cell-output cell-output-{esc(o.get("name", "stdout"))}"><pre><code>'
                               f'{esc(txt)}</code></pre></div>')
        elif t == 'error':
            tb = _ANSI.sub('', '\n'.join(o.get('traceback') or [f"{o.get('ename')}: {o.get('evalue')}"]))
            out.append(f'<div class="cell-output cell-output-error"><pre><code>{esc(tb)}</code></pre></div>')
        elif t in ('display_data', 'execute_result'):
            data, meta = o.get('data', {}) or {}, o.get('metadata', {}) or {}
            order = (['text/markdown'] if asis else []) + _MIME_ORDER
            mime = next((m for m in order if m in data), None)
            if mime is None: continue
            v = _text(data[mime])
            # show_doc's links into a repository not checked here
            if mime == 'text/markdown': v = _SOURCE_LINK.sub('', v)
            if mime == 'text/markdown' and asis: out.append(ctx.markdown(v)); continue
            if mime == 'text/html': body = ctx.rewrite_refs(v)
            elif mime.startswith('image/'):
                ext = {'image/svg+xml': '.svg', 'image/png': '.png', 'image/jpeg': '.jpg', 'image/gif': '.gif'}[mime]
                raw = v.encode() if mime == 'image/svg+xml' else base64.b64decode(v)
                url = ctx.save_file(raw, ext, f'cell-{cell_no}-output-{k}')
                m = meta.get(mime, {}) if isinstance(meta.get(mime), dict) else {}
                size = ''.join(f' {a}="{int(m[a])}"' for a in ('width', 'height') if isinstance(m.get(a), (int, float)))
                alt = opts.get('fig-alt') or opts.get('fig-cap') or f'Output of cell {cell_no}'
                body = f'<img src="{esc(url)}" alt="{esc(str(alt))}"{size} loading="lazy">'
                if opts.get('fig-cap'):
                    body = f'<figure>{body}<figcaption>{esc(str(opts["fig-cap"]))}</figcaption></figure>'
            elif mime in ('text/markdown', 'text/latex'): body = ctx.markdown(v, toc=False)
            else: body = f'<pre><code>{esc(_ANSI.sub("", v))}</code></pre>'
            out.append(f'<div class="cell-output cell-output-display">{body}</div>')
    return out


def _is_show_doc(cell, code: str) -> bool:
    return bool(cell.metadata.get('docs_build', {}).get('auto_show_doc') or re.match(r'^\s*show_doc\(', code, re.M))


def render_cell(ctx: PageContext, cell, cell_no: int) -> str:
    ct = cell.get('cell_type')
    src = _text(cell.get('source'))
    if ct == 'markdown': return ctx.markdown(src)
    if ct != 'code': return ''
    # papermill's, not the reader's
    if {'parameters', 'injected-parameters'} & set(cell.metadata.get('tags', [])): return ''
    opts, code = cell_options(src)
    if opts.get('include') is False: return ''
    parts = []
    if opts.get('echo', True) is not False and code.strip():
        parts.append(f'<div class="cell-code">{code_block(code, cell.metadata.get("language") or "python")}</div>')
    skipped = cell.metadata.get('docs_build', {}).get('skipped')
    if skipped:
        parts.append(f'<div class="cell-note">Not executed when these pages were built (<code>{esc(skipped)}</code>)'
                     f'{"; outputs as saved in the notebook" if cell.get("outputs") else ""}.</div>')
    if opts.get('output', True) is not False and opts.get('eval', True) is not False:
        parts += render_outputs(ctx, cell, opts, cell_no)
    if not parts: return ''
    if _is_show_doc(cell, code): return '<div class="cell show-doc">' + ''.join(parts) + '</div>'
    return '<div class="cell">' + ''.join(parts) + '</div>'


# ---------------------------------------------------------------- the site

class Site:
    def __init__(self, project, pages: list):
        self.project, self.pages = project, pages
        self.by_src = {p.src.resolve(): p for p in pages}
        self.by_nbdev = {p.nbdev_html: p for p in pages}
        self.assets = {}          # source file -> path in the site
        self.warnings = []
        w = project.quarto.get('website', {}) or {}
        self.title = str(w.get('title') or project.settings.get('title') or project.settings.get('lib_name', ''))
        self.repo_url = w.get('repo-url') or project.settings.get('git_url', '')
        self.repo_actions = w.get('repo-actions') or []
        self.sidebar = self._sidebar((w.get('sidebar') or {}).get('contents') or [])

    # -- navigation
    def _sidebar(self, contents) -> list:
        "[(title, page or url, children)] in sidebar.yml's order, then any page it does not list (nbdev's order)."
        seen = set()

        def entry(item):
            if isinstance(item, str):
                if item == 'auto': return None
                p = self.by_src.get((self.project.nbs / item).resolve())
                if p is None:
                    self.warnings.append(f'sidebar.yml lists {item!r}, which is not a rendered notebook'); return None
                seen.add(p.name)
                return (p.title, p, [])
            if isinstance(item, dict):
                if 'section' in item or 'contents' in item:
                    kids = [e for e in map(entry, item.get('contents') or []) if e]
                    title = item.get('section') or item.get('text') or ''
                    target = None
                    if item.get('href'): target = (entry(item['href']) or (None, item['href']))[1]
                    return (str(title), target, kids)
                href = item.get('href') or item.get('file')
                if href:
                    e = entry(href) if not _SCHEME.match(href) else None
                    if e: return (str(item.get('text') or e[0]), e[1], [])
                    return (str(item.get('text') or href), href, [])
            return None
        items = [e for e in map(entry, contents) if e]
        rest = [p for p in self.pages if p.name not in seen]
        rest.sort(key=lambda p: (p.name != 'index', p.name))     # nbdev_sidebar: index first, then by name
        items += [(p.title, p, []) for p in rest]
        return items

    def linear(self) -> list:
        "The pages in sidebar order (for previous/next links)."
        out = []

        def walk(items):
            for title, target, kids in items:
                if isinstance(target, Page) and target not in out: out.append(target)
                walk(kids)
        walk(self.sidebar)
        return out

    # -- URLs
    def rel_url(self, site_path: str, page: Page) -> str:
        "URL of `site_path` (relative to the site root) from `page`."
        base = posixpath.dirname(page.href) or '.'
        return urllib.parse.quote(posixpath.relpath(site_path, base), safe="/#?&=;:@%+~,!$'()*")

    def resolve(self, url: str, page: Page) -> str:
        "A link or image reference of a notebook, as the site needs it."
        if not url or url.startswith('#'): return url
        site_url = self.project.site_url
        if site_url and url.startswith(site_url):         # nbdev's own symbol links, to the published site
            path, _, frag = url[len(site_url):].partition('#')
            target = self.by_nbdev.get(path) or next((p for p in self.pages if p.href == path), None)
            if target is not None: return self.rel_url(target.href, page) + (f'#{frag}' if frag else '')
            return url
        if _SCHEME.match(url) or url.startswith('//'): return url
        path, frag = url.split('#', 1) if '#' in url else (url, None)
        path, query = path.split('?', 1) if '?' in path else (path, None)
        tail = (f'?{query}' if query else '') + (f'#{frag}' if frag is not None else '')
        if not path: return url
        fs = urllib.parse.unquote(path)
        base = self.project.nbs if fs.startswith('/') else page.src.parent
        target = Path(os.path.normpath(base / fs.lstrip('/')))
        p = self.by_src.get(target) or (self.by_src.get(target.with_suffix('.ipynb'))
                                        if target.suffix in ('.html', '') else None)
        if p is not None: return self.rel_url(p.href, page) + tail
        if target.is_file():
            try: rel = target.relative_to(self.project.nbs)
            except ValueError:
                try: rel = target.relative_to(self.project.repo)
                except ValueError:
                    self.warnings.append(f'{page.src.name}: {url!r} is outside the repository; left as is')
                    return url
            if rel.suffix == '.ipynb':
                self.warnings.append(f'{page.src.name}: {url!r} is a notebook that is not rendered; left as is')
                return url
            self.assets[target] = rel.as_posix()
            return self.rel_url(rel.as_posix(), page) + tail
        self.warnings.append(f'{page.src.name}: broken reference {url!r} (no file {target})')
        return url

    # -- output
    def write(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        libs = out / LIBS
        shutil.copytree(KATEX, libs / 'katex', ignore=shutil.ignore_patterns('README.md'))
        for f in ('site.css', 'site.js'): shutil.copy2(ASSETS / f, libs / f)
        defs = _FORMATTER.get_style_defs('.sourceCode code').splitlines()     # token colours only: no backgrounds
        (libs / 'pygments.css').write_text('\n'.join(l for l in defs if l.startswith('.sourceCode code .')) + '\n',
                                           encoding='utf-8')
        extra_css = []
        fmt_html = ((self.project.quarto.get('format') or {}).get('html') or {})
        css = fmt_html.get('css') or []
        for c in ([css] if isinstance(css, str) else css):
            if (self.project.nbs / c).is_file():
                shutil.copy2(self.project.nbs / c, out / c); extra_css.append(c)
        figures = self.project.repo / 'figures'
        if figures.is_dir(): shutil.copytree(figures, out / 'figures', dirs_exist_ok=True)
        order = self.linear()
        search = []
        for page in self.pages:
            ctx = PageContext(self, page, out)
            body = '\n'.join(filter(None, (render_cell(ctx, c, i) for i, c in enumerate(page.cells, 1))))
            desc = ctx.markdown(page.description, toc=False) if page.description else ''
            html_ = self.page_html(page, body, desc, ctx.toc, order, extra_css)
            dst = out / page.href
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(html_, encoding='utf-8')
            search += search_entries(page, body)
        for src, rel in self.assets.items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out / rel)
        (libs / 'search-index.js').write_text('window.DOCS_SEARCH = ' + json.dumps(search, ensure_ascii=False) + ';\n',
                                              encoding='utf-8')
        (out / '.nojekyll').write_text('')
        for w in self.warnings: print('[docs] warning:', w, file=sys.stderr)

    def sidebar_html(self, page: Page) -> str:
        def ul(items, depth=0):
            lis = []
            for title, target, kids in items:
                if isinstance(target, Page):
                    cur = ' class="active" aria-current="page"' if target is page else ''
                    a = f'<a href="{esc(self.rel_url(target.href, page))}"{cur}>{esc(title)}</a>'
                elif target: a = f'<a href="{esc(self.resolve(target, page))}">{esc(title)}</a>'
                else: a = f'<span class="section-title">{esc(title)}</span>'
                lis.append(f'<li>{a}{ul(kids, depth + 1) if kids else ""}</li>')
            return f'<ul class="sidebar-list depth-{depth}">' + ''.join(lis) + '</ul>'
        return ul(self.sidebar)

    def page_html(self, page: Page, body: str, desc: str, toc: list, order: list, extra_css: list) -> str:
        root = lambda p: esc(self.rel_url(p, page))   # noqa: E731
        css = [f'{LIBS}/katex/katex.min.css', f'{LIBS}/pygments.css', f'{LIBS}/site.css'] + extra_css
        links = '\n'.join(f'<link rel="stylesheet" href="{root(c)}">' for c in css)
        toc_html = ''
        if toc:
            toc_html = '<ul>' + ''.join(f'<li class="toc-h{lvl}"><a href="#{esc(i)}">{esc(t)}</a></li>'
                                        for lvl, i, t in toc) + '</ul>'
        actions = ''
        if 'issue' in self.repo_actions and self.repo_url:
            actions = (f'<div class="toc-actions"><a href="{esc(self.repo_url.rstrip("/"))}/issues/new" '
                       f'rel="noopener">Report an issue</a></div>')
        idx = order.index(page) if page in order else -1
        prev_ = order[idx - 1] if idx > 0 else None
        next_ = order[idx + 1] if 0 <= idx < len(order) - 1 else None
        pn = ''
        if prev_: pn += f'<a class="prev" href="{root(prev_.href)}"><span>Previous</span>{esc(prev_.title)}</a>'
        if next_: pn += f'<a class="next" href="{root(next_.href)}"><span>Next</span>{esc(next_.title)}</a>'
        title = page.title if page.name == 'index' and page.title == self.title else f'{page.title} – {self.title}'
        return f'''<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="docs_build (offline nbdev site)">
<title>{esc(title)}</title>
<meta name="description" content="{esc(page.description)}">
<link rel="icon" href="data:,">
{links}
</head>
<body data-page="{esc(page.name)}">
<header class="navbar">
  <button class="sidebar-toggle" type="button" aria-label="Toggle navigation" aria-expanded="false">&#9776;</button>
  <a class="brand" href="{root('index.html')}">{esc(self.title)}</a>
  <div class="search" role="search">
    <input id="search-input" type="search" placeholder="Search" aria-label="Search" autocomplete="off">
    <ul id="search-results" hidden></ul>
  </div>
</header>
<div class="page-layout">
<nav class="sidebar" id="sidebar" aria-label="Pages">
{self.sidebar_html(page)}
</nav>
<main class="content" id="content">
<header id="title-block-header">
<h1 class="title">{esc(page.title)}</h1>
{f'<div class="description">{desc}</div>' if desc else ''}
</header>
{body}
<nav class="page-navigation" aria-label="Previous and next page">{pn}</nav>
</main>
<nav class="toc" aria-label="On this page">
{'<h2>On this page</h2>' + toc_html if toc_html else ''}
{actions}
</nav>
</div>
<script src="{root(LIBS + '/katex/katex.min.js')}"></script>
<script src="{root(LIBS + '/search-index.js')}"></script>
<script src="{root(LIBS + '/site.js')}"></script>
</body>
</html>
'''


def _plain(fragment: str) -> str:
    fragment = re.sub(r'<(script|style)\b.*?</\1>', ' ', fragment, flags=re.S | re.I)
    fragment = re.sub(r'</?(?:p|div|pre|li|ul|ol|h\d|tr|td|th|table|br|hr|blockquote|figure)\b[^>]*>', ' ', fragment,
                      flags=re.I)
    return re.sub(r'\s+', ' ', html.unescape(re.sub(r'<[^>]+>', '', fragment))).strip()


def search_entries(page: Page, body: str) -> list:
    "One search entry for the top of the page and one for each h2/h3 section."
    parts = re.split(r'(<h[23][^>]*\bid="[^"]*"[^>]*>.*?</h[23]>)', body, flags=re.S)
    out = [{'page': page.title, 'title': page.title, 'href': page.href,
            'text': (page.description + ' ' + _plain(parts[0]))[:600]}]
    for i in range(1, len(parts), 2):
        ident = re.search(r'\bid="([^"]*)"', parts[i]).group(1)
        out.append({'page': page.title, 'title': _plain(parts[i]), 'href': f'{page.href}#{html.unescape(ident)}',
                    'text': _plain(parts[i + 1] if i + 1 < len(parts) else '')[:600]})
    return out
