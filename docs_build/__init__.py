"""Offline build of daq's documentation site, from the notebooks in nbs/, with PyPI packages only.

nbdev's own site is built by Quarto (`nbdev_docs`, configured by nbs/_quarto.yml, nbs/nbdev.yml, nbs/sidebar.yml),
which cannot be installed everywhere. This package renders the same notebooks, after nbdev's own processing, into a
static site that needs no network at all:

1. each notebook is executed by papermill in a fresh `python3` kernel (cwd nbs/), minus the cells flagged with
   settings.ini's `tst_flags` (exactly the cells tests/test_notebooks.py drops), with nbdev's `add_show_docs` cells
   inserted first so that every exported symbol gets its API entry;
2. nbdev's documentation processors (`nbdev.processors.FilterDefaults`, less `exec_show_docs`, whose work the full
   execution already did) hide `#|hide` and `#|export` cells, turn the first `# Title` / `> description` cell into
   front matter, link backticked symbols, and so on;
3. the result is rendered to HTML (markdown-it-py, Pygments; math by a vendored copy of KaTeX) with the sidebar of
   nbs/sidebar.yml, into settings.ini's `doc_path` (`_docs/`).

Build with `python -m docs_build` (see `python -m docs_build --help`); tests/test_docs.py checks the result in
headless Chromium.
"""
from .build import build_site, Project  # noqa: F401
