"""Headless Chromium driven over the DevTools protocol, on a pipe (stdlib only), to check the built site.

`Chromium` starts the browser with `--remote-debugging-pipe` (fd 3: commands in, fd 4: replies and events out,
messages separated by NUL bytes, as Puppeteer and Playwright use it) and a fresh profile. `Chromium.visit(url)` opens
the page in a new tab and reports everything a person would see go wrong: console errors (`console.error`,
`console.assert`), uncaught exceptions, browser log errors, failed requests. `check_site` visits every page of a built
site and also checks that every internal link and image points at an existing file (and anchor)."""
from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_CANDIDATES = ('/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome')
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--disable-quic', '--no-default-browser-check',
         '--disable-extensions', '--mute-audio', '--hide-scrollbars', '--remote-debugging-pipe']


def find_chromium() -> str | None:
    "$CHROMIUM, else the first of /usr/bin/chromium, chromium-browser, google-chrome that exists."
    env = os.environ.get('CHROMIUM')
    if env: return env if Path(env).is_file() else None
    return next((c for c in CHROMIUM_CANDIDATES if Path(c).is_file()), None)


class BrowserError(RuntimeError): pass


@dataclass
class Visit:
    "What happened while a page loaded."
    url: str
    console_errors: list = field(default_factory=list)     # console.error / console.assert / exceptions / log errors
    warnings: list = field(default_factory=list)
    failed_requests: list = field(default_factory=list)
    info: dict = field(default_factory=dict)               # what COLLECT_JS returned

    @property
    def problems(self) -> list:
        return self.console_errors + [f'request failed: {r}' for r in self.failed_requests]


# Run in the page once it has loaded: links, resources, ids, and a few facts the tests assert on.
COLLECT_JS = r"""
(() => {
  const abs = (el, attr) => {
    const v = el.getAttribute(attr); return v === null ? null : new URL(v, document.baseURI).href; };
  const refs = [];
  document.querySelectorAll('a[href]')
    .forEach(a => refs.push({kind: 'link', raw: a.getAttribute('href'), url: abs(a, 'href')}));
  document.querySelectorAll('img[src], script[src], iframe[src], source[src], video[src], audio[src], embed[src]')
    .forEach(e => refs.push({kind: e.tagName.toLowerCase(), raw: e.getAttribute('src'), url: abs(e, 'src')}));
  document.querySelectorAll('link[href]')
    .forEach(l => refs.push({kind: 'link-' + (l.rel || ''), raw: l.getAttribute('href'), url: abs(l, 'href')}));
  const brokenImages = [...document.images].filter(i => i.complete && i.naturalWidth === 0)
    .map(i => i.currentSrc || i.src);
  return {
    title: document.title,
    refs,
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
    brokenImages,
    math: document.querySelectorAll('.math').length,
    katex: document.querySelectorAll('.math .katex').length,
    mathErrors: [...document.querySelectorAll('.math-error, .katex-error')].map(e => e.textContent.slice(0, 200)),
    showDocs: [...document.querySelectorAll('.show-doc h1[id], .show-doc h2[id], .show-doc h3[id], .show-doc h4[id]')]
      .map(h => ({id: h.id, text: h.textContent.trim(),
                  code: (h.parentElement.querySelector('pre') || {textContent: ''}).textContent})),
    sidebar: [...document.querySelectorAll('nav.sidebar a')].map(a => a.textContent.trim()),
    images: document.images.length,
    bodyText: document.body ? document.body.innerText.length : 0,
  };
})()
"""


class Chromium:
    "One headless Chromium, a fresh profile, DevTools over a pipe. Use as a context manager."

    def __init__(self, executable: str | None = None, timeout: float = 30.0, window=(1280, 900)):
        self.executable = executable or find_chromium()
        if not self.executable:
            raise BrowserError('Chromium not found (tried $CHROMIUM, ' + ', '.join(CHROMIUM_CANDIDATES) + ')')
        self.timeout, self.window = timeout, window
        self._id, self._pending, self._events = 0, {}, {}
        self._lock = threading.Lock()
        self.proc = None

    # -- process and transport
    def __enter__(self):
        self.profile = tempfile.mkdtemp(prefix='docs-chromium-')
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        args = FLAGS + [f'--user-data-dir={self.profile}', f'--window-size={self.window[0]},{self.window[1]}',
                        'about:blank']
        # Chromium reads commands on fd 3 and writes to fd 4. In the child, move our pipe ends out of the way (to
        # fds >= 10), then onto 3 and 4 (dup2 makes them inheritable; every other fd Python opened is not, PEP 446).
        def fds_3_4(r=to_chrome_r, w=from_chrome_w):
            r, w = fcntl.fcntl(r, fcntl.F_DUPFD_CLOEXEC, 10), fcntl.fcntl(w, fcntl.F_DUPFD_CLOEXEC, 10)
            os.dup2(r, 3); os.dup2(w, 4)
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([self.executable, *args], preexec_fn=fds_3_4, close_fds=False,
                                     stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        os.close(to_chrome_r); os.close(from_chrome_w)
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        try: self.version = self.send('Browser.getVersion')
        except Exception:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            try: self.send('Browser.close', timeout=5)
            except Exception: pass
            try: self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill(); self.proc.wait(5)
        for fd in (self._to_chrome,):
            try: os.close(fd)
            except OSError: pass
        shutil.rmtree(getattr(self, 'profile', ''), ignore_errors=True)
        return False

    def stderr_tail(self, n: int = 3000) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors='replace')[-n:]

    def _read_loop(self):
        buf = b''
        while True:
            try: chunk = os.read(self._from_chrome, 1 << 16)
            except OSError: chunk = b''
            if not chunk: break
            buf += chunk
            while b'\0' in buf:
                raw, buf = buf.split(b'\0', 1)
                msg = json.loads(raw)
                if 'id' in msg:
                    with self._lock: q = self._pending.pop(msg['id'], None)
                    if q: q.put(msg)
                else:
                    with self._lock: q = self._events.get(msg.get('sessionId'))
                    if q: q.put(msg)
        with self._lock:
            for q in self._pending.values(): q.put({'error': {'message': 'Chromium closed the DevTools pipe'}})
            self._pending.clear()
        os.close(self._from_chrome)

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float | None = None):
        q = queue.Queue()
        with self._lock:
            self._id += 1
            mid = self._id
            self._pending[mid] = q
        msg = {'id': mid, 'method': method, 'params': params or {}}
        if session: msg['sessionId'] = session
        data = json.dumps(msg).encode() + b'\0'
        try:
            while data: data = data[os.write(self._to_chrome, data):]
        except OSError as e: raise BrowserError(f'cannot talk to Chromium ({e}); its output:\n{self.stderr_tail()}')
        try: res = q.get(timeout=timeout or self.timeout)
        except queue.Empty:
            raise BrowserError(f'{method}: no answer from Chromium in {timeout or self.timeout}s; '
                               f'its output:\n{self.stderr_tail()}')
        if 'error' in res: raise BrowserError(f'{method}: {res["error"].get("message")}')
        return res.get('result', {})

    # -- pages
    def visit(self, url: str, screenshot: Path | str | None = None, settle: float = 0.3, full_page: bool = False,
              script: str | None = None) -> Visit:
        """Load `url` in a new tab; report console errors, exceptions and failed requests; collect links and ids.
        `script`: a JS expression evaluated once the page has loaded (promises awaited); its value is info['script']."""
        target = self.send('Target.createTarget', {'url': 'about:blank'})['targetId']
        session = self.send('Target.attachToTarget', {'targetId': target, 'flatten': True})['sessionId']
        events = queue.Queue()
        with self._lock: self._events[session] = events
        v = Visit(url)
        try:
            for m in ('Page.enable', 'Runtime.enable', 'Log.enable', 'Network.enable'): self.send(m, session=session)
            self.send('Emulation.setDeviceMetricsOverride', {'width': self.window[0], 'height': self.window[1],
                                                            'deviceScaleFactor': 1, 'mobile': False}, session=session)
            nav = self.send('Page.navigate', {'url': url}, session=session)
            if nav.get('errorText'): v.console_errors.append(f'navigation failed: {nav["errorText"]}')
            deadline, loaded = time.time() + self.timeout, False
            while not loaded and time.time() < deadline:
                try: loaded = self._event(v, events.get(timeout=0.1)) or loaded
                except queue.Empty: pass
            if not loaded: v.console_errors.append(f'page did not finish loading in {self.timeout}s')
            self.evaluate(session, 'document.fonts ? document.fonts.ready.then(() => true) : true', await_promise=True)
            end = time.time() + settle           # errors of deferred work (late scripts, fonts) still count
            while time.time() < end:
                try: self._event(v, events.get(timeout=0.05))
                except queue.Empty: pass
            v.info = self.evaluate(session, COLLECT_JS) or {}
            if script: v.info['script'] = self.evaluate(session, script, await_promise=True)
            while True:
                try: self._event(v, events.get_nowait())
                except queue.Empty: break
            if screenshot:
                params = {'format': 'png'}
                if full_page:
                    h = self.evaluate(session, 'Math.ceil(document.documentElement.scrollHeight)')
                    self.send('Emulation.setDeviceMetricsOverride',
                              {'width': self.window[0], 'height': int(min(h, 16000)),
                               'deviceScaleFactor': 1, 'mobile': False}, session=session)
                shot = self.send('Page.captureScreenshot', params, session=session)
                Path(screenshot).write_bytes(base64.b64decode(shot['data']))
        finally:
            with self._lock: self._events.pop(session, None)
            try: self.send('Target.closeTarget', {'targetId': target})
            except BrowserError: pass
        return v

    def evaluate(self, session: str, expr: str, await_promise: bool = False):
        res = self.send('Runtime.evaluate', {'expression': expr, 'returnByValue': True, 'awaitPromise': await_promise},
                        session=session)
        if 'exceptionDetails' in res:
            raise BrowserError(f'evaluating in the page failed: {res["exceptionDetails"].get("text")} '
                               f'{res["exceptionDetails"].get("exception", {}).get("description", "")}')
        return res.get('result', {}).get('value')

    @staticmethod
    def _event(v: Visit, msg: dict) -> bool:
        "Record one event in `v`; True for the page's load event."
        m, p = msg.get('method'), msg.get('params', {})
        if m == 'Page.loadEventFired': return True
        if m == 'Runtime.consoleAPICalled':
            text = ' '.join(str(a.get('value', a.get('description', a.get('unserializableValue', ''))))
                            for a in p.get('args', []))
            if p.get('type') in ('error', 'assert'): v.console_errors.append(f'console.{p["type"]}: {text}')
            elif p.get('type') == 'warning': v.warnings.append(f'console.warn: {text}')
        elif m == 'Runtime.exceptionThrown':
            d = p.get('exceptionDetails', {})
            v.console_errors.append(f'uncaught exception: {d.get("exception", {}).get("description") or d.get("text")}')
        elif m == 'Log.entryAdded':
            e = p.get('entry', {})
            line = f'{e.get("source")}: {e.get("text")}' + (f' ({e["url"]})' if e.get('url') else '')
            if e.get('level') == 'error': v.console_errors.append(line)
            elif e.get('level') == 'warning': v.warnings.append(line)
        elif m == 'Network.loadingFailed':
            if not p.get('canceled'):
                v.failed_requests.append(f'{p.get("errorText")} ({p.get("type")}, request {p.get("requestId")})')
        return False


# ---------------------------------------------------------------- the whole site

def _local_target(url: str, site: Path):
    "(file path, fragment) for a file:// URL inside `site`; None for anything else (external links)."
    u = urllib.parse.urlsplit(url)
    if u.scheme != 'file': return None
    path = Path(urllib.parse.unquote(u.path))
    try: path.resolve().relative_to(site.resolve())
    except ValueError: return ('outside', path, u.fragment)
    return ('inside', path, urllib.parse.unquote(u.fragment))


@dataclass
class SiteReport:
    pages: dict                  # html path relative to the site -> Visit
    problems: list               # human-readable, empty when the site is fine


def check_site(site: Path, screenshot: Path | None = None, browser: Chromium | None = None,
               screenshot_page: str = 'index.html') -> SiteReport:
    """Visit every .html page of `site` (file://, no network): no console errors or failed loads anywhere, every
    internal href/src resolves to an existing file inside the site, every internal #anchor to an existing id."""
    site = Path(site).resolve()
    html_pages = sorted(p for p in site.rglob('*.html')
                        if not any(part.startswith('.') for part in p.relative_to(site).parts))
    own = browser is None
    b = Chromium() if own else browser
    if own: b.__enter__()
    visits, problems = {}, []
    try:
        for p in html_pages:
            rel = p.relative_to(site).as_posix()
            shot = screenshot if (screenshot and rel == screenshot_page) else None
            visits[rel] = v = b.visit(p.as_uri(), screenshot=shot)
            problems += [f'{rel}: {x}' for x in v.problems]
            problems += [f'{rel}: image did not load: {x}' for x in v.info.get('brokenImages', [])]
            problems += [f'{rel}: math not rendered: {x}' for x in v.info.get('mathErrors', [])]
            if v.info.get('math', 0) != v.info.get('katex', 0):
                problems.append(f'{rel}: {v.info.get("math")} formulas but {v.info.get("katex")} rendered by KaTeX')
    finally:
        if own: b.__exit__(None, None, None)
    ids = {rel: set(v.info.get('ids', [])) for rel, v in visits.items()}
    for rel, v in visits.items():
        for r in v.info.get('refs', []):
            t = _local_target(r['url'] or '', site)
            if t is None: continue
            where, path, frag = t
            if where == 'outside':
                problems.append(f'{rel}: {r["kind"]} {r["raw"]!r} points outside the site ({path})'); continue
            if not path.is_file():
                problems.append(f'{rel}: broken {r["kind"]} {r["raw"]!r} '
                                f'(no file {path.relative_to(site) if path.is_relative_to(site) else path})')
                continue
            if frag and path.suffix == '.html':
                target_rel = path.resolve().relative_to(site).as_posix()
                if target_rel in ids and frag not in ids[target_rel]:
                    problems.append(f'{rel}: {r["kind"]} {r["raw"]!r}: no element with id {frag!r} in {target_rel}')
    return SiteReport(visits, problems)


if __name__ == '__main__':     # python -m docs_build.browser [SITE]: check a built site, print what is wrong
    import sys
    site = Path(sys.argv[1] if len(sys.argv) > 1 else '_docs')
    rep = check_site(site, screenshot=site / 'screenshot-home.png')
    print(f'{len(rep.pages)} pages checked; {len(rep.problems)} problems')
    for x in rep.problems: print(' ', x)
    sys.exit(1 if rep.problems else 0)
