"""Small Sphinx fixes for the book's HTML (loaded through _config.yml's local_extensions).

* Jupyter Book sets up sphinx-thebe twice, so every page declared
  ``const THEBE_JS_URL`` twice (a console error) and pointed at a script on
  unpkg.com.  The book has no live-code launcher and must work offline, so the
  thebe scripts are dropped from every page.
"""
from __future__ import annotations


def _drop_thebe(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    context["script_files"] = [
        s for s in scripts
        if "thebe" not in str(getattr(s, "filename", s) or "")
        and "THEBE_JS_URL" not in str(getattr(s, "attributes", {}).get("body", ""))
    ]


def setup(app):
    app.connect("html-page-context", _drop_thebe, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
