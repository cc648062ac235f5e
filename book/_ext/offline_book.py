"""A local Sphinx extension that keeps the book free of what it cannot use offline.

Jupyter Book 1 always loads sphinx-thebe (live code cells through Binder). The course does not use it,
and on every page it declares its settings script twice (a JavaScript error: "Identifier
'THEBE_JS_URL' has already been declared") and names a script on unpkg.com. This extension
disconnects sphinx-thebe's hooks and drops its stylesheet, so none of it reaches the pages.
"""


def _drop_thebe(app, config):
    for event, listeners in app.events.listeners.items():
        for listener in list(listeners):
            if getattr(listener.handler, "__module__", "") == "sphinx_thebe":
                app.disconnect(listener.id)
    app.registry.css_files[:] = [entry for entry in app.registry.css_files if "thebe" not in entry[0]]


def setup(app):
    app.connect("config-inited", _drop_thebe, priority=900)  # after every extension has connected
    return {"parallel_read_safe": True, "parallel_write_safe": True}
