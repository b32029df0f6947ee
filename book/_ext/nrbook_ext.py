"""The book's own Sphinx extension (``sphinx: local_extensions`` in ``_config.yml``).

Three things Jupyter Book does not do by itself:

* **MathJax offline.** ``mathjax_path`` in ``_config.yml`` names a file under
  ``mathjax/``; this extension copies MathJax 3 from the
  ``sphinx-mathjax-offline`` package (installed by the ``book`` extra) into the
  build's ``_static/mathjax/``, so the pages typeset their mathematics with no
  network. Only the TeX → CommonHTML component is kept among MathJax's
  combined files (the others are alternatives to it); the fonts, the TeX
  extensions MathJax loads on demand and the accessibility modules of its menu
  are all copied.
* **Pages whose scripts run cleanly.** sphinx-thebe registers its inline
  ``const THEBE_JS_URL = ...`` script twice under Sphinx 7, so every page threw
  "Identifier 'THEBE_JS_URL' has already been declared": each page's scripts
  are de-duplicated.
* **One citation style.** The text cites author–year
  (``bibtex_reference_style: author_year``); the pybtex formatting style
  ``author_year`` registered here (``bibtex_default_style: author_year``)
  labels the reference list the same way, e.g. ``[Karnine et al., 2024]``,
  sorted by author, year and title.
"""
from __future__ import annotations

import importlib.metadata
import posixpath
from pathlib import Path

import pybtex.plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from sphinx.util import logging
from sphinx.util.fileutil import copy_asset
from sphinxcontrib.bibtex.plugin import find_plugin as find_bibtex_plugin

logger = logging.getLogger(__name__)

MATHJAX_DIST = "sphinx-mathjax-offline"            # the PyPI package that ships MathJax 3
MATHJAX_DIR = "sphinx-mathjax-offline/static/mathjax"  # where its files lie, from site-packages
STATIC_SUBDIR = "mathjax"                          # under the build's _static/

# MathJax's combined components: each is a complete alternative to the others, so only the
# one mathjax_path names is copied (saves about 14 MB per build). latest.js would load
# MathJax from a CDN and node-main.js is for Node: neither belongs in a web page.
COMBINED = {"tex-chtml.js", "tex-chtml-full.js", "tex-chtml-full-speech.js", "tex-mml-chtml.js",
            "tex-svg.js", "tex-svg-full.js", "tex-mml-svg.js", "mml-chtml.js", "mml-svg.js"}
NEVER = {"latest.js", "node-main.js"}


def mathjax_source() -> Path | None:
    """The folder of MathJax files that ``sphinx-mathjax-offline`` installed, or None."""
    try:
        dist = importlib.metadata.distribution(MATHJAX_DIST)
    except importlib.metadata.PackageNotFoundError:
        return None
    folder = Path(dist.locate_file(MATHJAX_DIR))
    return folder if folder.is_dir() else None


def _local_component(app) -> str | None:
    """The file ``mathjax_path`` names under ``mathjax/`` (e.g. ``tex-chtml.js``), or None
    when it points elsewhere (a URL, another folder)."""
    path = str(app.config.mathjax_path or "")
    prefix = STATIC_SUBDIR + "/"
    return path[len(prefix):] if path.startswith(prefix) else None


def _check_mathjax(app) -> None:
    if app.builder.format != "html" or _local_component(app) is None:
        return
    if mathjax_source() is None:
        logger.warning(f"mathjax_path is {app.config.mathjax_path!r} but the {MATHJAX_DIST} package is not "
                       f"installed, so the pages would have no MathJax: pip install -e '.[book]'")


def copy_mathjax(app, exc) -> None:
    """After a successful HTML build: MathJax into ``_static/mathjax/``."""
    component = _local_component(app)
    if exc is not None or app.builder.format != "html" or component is None:
        return
    source = mathjax_source()
    if source is None:
        return  # warned at builder-inited
    if not (source / component).is_file():
        logger.warning(f"mathjax_path {app.config.mathjax_path!r}: {MATHJAX_DIST} has no {component}")
        return
    skip = (COMBINED - {component}) | NEVER

    def excluded(rel: str) -> bool:
        return posixpath.normpath(rel) in skip

    copy_asset(source, Path(app.outdir) / "_static" / STATIC_SUBDIR, excluded)


# --- author-year labels for the reference list ---------------------------------------------

REFERENCING = "sphinxcontrib.bibtex.style.referencing"
_reference_style = None   # the text's referencing style, set at config-inited


def _text_style():
    """The in-text referencing style (sphinxcontrib-bibtex's ``bibtex_reference_style``),
    whose person style and author-year separator the labels copy."""
    global _reference_style
    if _reference_style is None:
        _reference_style = find_bibtex_plugin(REFERENCING, "author_year")()
    return _reference_style


class AuthorYearLabelStyle(BaseLabelStyle):
    """Labels ``Author, year`` / ``Author and Other, year`` / ``Author et al., year``, built
    with the same name template and separators as sphinxcontrib-bibtex's in-text
    author-year citations, so a label reads exactly like the citations that link to it.
    Two entries with the same label (same first author, same year) are reported by
    sphinxcontrib-bibtex as a duplicate-label warning, which fails the book's build."""

    def format_labels(self, sorted_entries):
        from sphinxcontrib.bibtex.style.template import join, year

        style = _text_style()
        template = join(sep=getattr(style, "author_year_sep", ", "))[
            style.person.author_or_editor_or_title(full=False), year]
        for entry in sorted_entries:
            yield template.format_data({"entry": entry, "style": style}).render_as("text")


class AuthorYearStyle(UnsrtStyle):
    """The unsrt entry format with author-year labels, sorted by author, year, title."""

    default_label_style = "author_year"
    default_sorting_style = "author_year_title"


# --- clean pages --------------------------------------------------------------------------------

def dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    """Drop the second of two identical ``<script>`` entries of a page (same file or same
    inline body, same attributes): an inline ``const`` declared twice is a SyntaxError."""
    files = context.get("script_files")
    if not isinstance(files, list) or not files:
        return
    seen, unique = set(), []
    for js in files:
        attrs = getattr(js, "attributes", None) or {}
        # an inline script's file is None or "" depending on who added it
        key = (str(getattr(js, "filename", js) or ""), tuple(sorted((k, str(v)) for k, v in attrs.items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    files[:] = unique


def _remember_reference_style(app, config) -> None:
    global _reference_style
    name = getattr(config, "bibtex_reference_style", None) or "author_year"
    _reference_style = find_bibtex_plugin(REFERENCING, name)()


def setup(app):
    pybtex.plugin.register_plugin("pybtex.style.labels", "author_year", AuthorYearLabelStyle, force=True)
    pybtex.plugin.register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle, force=True)
    app.connect("config-inited", _remember_reference_style)
    app.connect("html-page-context", dedupe_scripts)
    app.connect("builder-inited", _check_mathjax)
    app.connect("build-finished", copy_mathjax)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
