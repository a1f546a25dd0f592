// Offline nbdev site: math (KaTeX, shipped with the site), search, table-of-contents highlight, mobile sidebar.
(function () {
  'use strict';

  function renderMath() {
    var els = document.querySelectorAll('.math');
    if (!els.length) return;
    if (typeof katex === 'undefined') { console.error('KaTeX did not load: math is not rendered'); return; }
    els.forEach(function (el) {
      var tex = el.textContent;
      try {
        katex.render(tex, el, {displayMode: el.classList.contains('display'), throwOnError: true, strict: 'ignore'});
      } catch (e) {
        // A formula KaTeX cannot typeset stays readable as TeX, and the build's browser check fails on this error.
        el.classList.add('math-error');
        el.textContent = tex;
        console.error('KaTeX could not render "' + tex + '": ' + e.message);
      }
    });
  }

  function escapeHtml(s) {
    return s.replace(/[&<>"']/g, function (c) {
      return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c];
    });
  }

  function setupSearch() {
    var input = document.getElementById('search-input');
    var list = document.getElementById('search-results');
    var index = window.DOCS_SEARCH || [];
    if (!input || !list) return;
    // search-index.js holds hrefs relative to the site root; a page's own depth gives the prefix
    var root = (document.querySelector('a.brand') || {}).getAttribute ?
      document.querySelector('a.brand').getAttribute('href').replace(/index\.html$/, '') : '';
    function run() {
      var q = input.value.trim().toLowerCase();
      if (!q) { list.hidden = true; list.innerHTML = ''; return; }
      var words = q.split(/\s+/);
      var hits = [];
      index.forEach(function (e) {
        var title = e.title.toLowerCase(), text = e.text.toLowerCase(), score = 0;
        for (var i = 0; i < words.length; i++) {
          var w = words[i];
          if (title.indexOf(w) >= 0) score += title === w ? 10 : 5;
          else if (text.indexOf(w) >= 0) score += 1;
          else return;
        }
        hits.push([score, e]);
      });
      hits.sort(function (a, b) { return b[0] - a[0]; });
      list.innerHTML = hits.slice(0, 12).map(function (h) {
        var e = h[1], t = e.text, pos = t.toLowerCase().indexOf(words[0]);
        var snip = t.slice(Math.max(0, pos - 40), Math.max(0, pos - 40) + 140);
        return '<li><a href="' + escapeHtml(root + e.href) + '"><span class="r-title">' + escapeHtml(e.title) +
          '</span><span class="r-page">' + escapeHtml(e.page) + '</span><span class="r-text">' + escapeHtml(snip) +
          '</span></a></li>';
      }).join('') || '<li class="empty">No results</li>';
      list.hidden = false;
    }
    input.addEventListener('input', run);
    input.addEventListener('focus', run);
    input.addEventListener('keydown', function (ev) {
      if (ev.key === 'Escape') { input.value = ''; run(); input.blur(); }
      if (ev.key === 'Enter') { var a = list.querySelector('a'); if (a) window.location.href = a.href; }
    });
    document.addEventListener('click', function (ev) {
      if (!ev.target.closest('.search')) list.hidden = true;
    });
  }

  function setupToc() {
    var links = Array.prototype.slice.call(document.querySelectorAll('.toc li a'));
    if (!links.length || !('IntersectionObserver' in window)) return;
    var byId = {};
    links.forEach(function (a) { byId[decodeURIComponent(a.getAttribute('href').slice(1))] = a; });
    var obs = new IntersectionObserver(function (entries) {
      entries.forEach(function (en) {
        if (en.isIntersecting && byId[en.target.id]) {
          links.forEach(function (a) { a.classList.remove('active'); });
          byId[en.target.id].classList.add('active');
        }
      });
    }, {rootMargin: '0px 0px -75% 0px'});
    Object.keys(byId).forEach(function (id) { var h = document.getElementById(id); if (h) obs.observe(h); });
  }

  function setupSidebarToggle() {
    var b = document.querySelector('.sidebar-toggle');
    if (!b) return;
    b.addEventListener('click', function () {
      var open = document.body.classList.toggle('sidebar-open');
      b.setAttribute('aria-expanded', open ? 'true' : 'false');
    });
  }

  function init() { renderMath(); setupSearch(); setupToc(); setupSidebarToggle(); }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init); else init();
})();
