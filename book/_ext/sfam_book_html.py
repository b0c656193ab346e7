"""A local Sphinx extension for the book's HTML (wired in _config.yml: sphinx.local_extensions).

With Sphinx 7.4, sphinx-thebe and sphinx-togglebutton add their inline configuration scripts twice to every
page (once as registered, once through the builder), and the second ``const THEBE_JS_URL = ...`` is a
JavaScript error ("Identifier 'THEBE_JS_URL' has already been declared") on every page. This extension drops
a script that is an exact repeat of one already on the page. The browser test
(browser_tests/test_rendered_book.py) fails on any JavaScript error, so it checks this.
"""


def _script_key(js):
    attributes = getattr(js, "attributes", {}) or {}
    return (getattr(js, "filename", js) or "",
            tuple(sorted((k, str(v)) for k, v in attributes.items() if k != "priority")))


def drop_repeated_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for js in scripts:
        key = _script_key(js)
        if key not in seen:
            seen.add(key)
            unique.append(js)
    scripts[:] = unique


def setup(app):
    app.connect("html-page-context", drop_repeated_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
