"""A local Sphinx extension: the static book holds only what works without a kernel and offline.

- Jupyter Book 1 always loads sphinx-thebe (live code cells through Binder). The course does not use
  it, and on every page it declares its settings script twice (a JavaScript error: "Identifier
  'THEBE_JS_URL' has already been declared") and names a script on unpkg.com. We disconnect its hooks
  and drop its stylesheet.
- No frozen ipywidgets. In a live notebook a chapter's sliders decode at every move; on a static page
  their saved state would still drag, with no kernel to redraw the picture. A code cell tagged
  `twin-<name>` shows, in the book, the in-browser twin of its widget (the same model, computed by
  book/web/explorer/ in the reader's browser) instead of its output. Any other widget output becomes
  a note. The notebooks' saved widget state is not written into the pages.
- `repository_url`: the address of the repository, from the one setting `repository: url:` in
  _config.yml, or None while it holds a placeholder (course_download.py shows it on the run page).
"""
from docutils import nodes

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
EXPLORER = "../explorer/"  # every page that shows a twin is one folder below the root of _build/html
SCRIPTS = (f'<link rel="stylesheet" href="{EXPLORER}explorer.css">\n'
           + "".join(f'<script src="{EXPLORER}{name}"></script>\n' for name in ("models.js", "nets.js", "explorer.js")))
TWIN_NOTE = ('<p class="vae-twin-note">In Jupyter this cell shows ipywidgets that run on the kernel. '
             'Here the same model runs in your browser:</p>\n')
TWINS = {  # cell tag -> the explorer that stands in for the cell's widget
    "twin-beta-map": '<div class="vae-explorer" data-kind="map" data-models="vae-l2-b0 vae-l2-b1 vae-l2-b4"></div>',
    "twin-latent-map": '<div class="vae-explorer" data-kind="map" data-models="vae-l2-b1" data-sliders="2"></div>',
    "twin-ten-sliders": '<div class="vae-explorer" data-kind="sliders" data-models="convvae-l10-b4 convvae-l10-b1"></div>',
}
NO_KERNEL_NOTE = ('<p class="vae-twin-note">This control needs a running Jupyter kernel: '
                  'see "Run it yourself" to open the notebook.</p>')


def _drop_thebe(app, config):
    for event, listeners in app.events.listeners.items():
        for listener in list(listeners):
            if getattr(listener.handler, "__module__", "") == "sphinx_thebe":
                app.disconnect(listener.id)
    app.registry.css_files[:] = [entry for entry in app.registry.css_files if "thebe" not in entry[0]]


def _holds_widget(node) -> bool:
    return any(WIDGET_VIEW in raw.astext() for raw in node.findall(nodes.raw))


def _replace_widgets(app, doctree):
    """Swap each widget output for its in-browser twin, or for a note; drop the saved widget state."""
    twins = 0
    for cell in list(doctree.findall(nodes.container)):
        tags = [c[len("tag_"):] for c in cell.get("classes", []) if c.startswith("tag_twin-")]
        outputs = [c for c in cell.children if "cell_output" in c.get("classes", [])]
        if tags and outputs:
            if tags[0] not in TWINS:
                raise ValueError(f"unknown twin tag {tags[0]!r} in {app.env.docname}: choose one of {sorted(TWINS)}")
            outputs[0].children = [nodes.raw("", TWIN_NOTE + TWINS[tags[0]], format="html")]
            outputs[0]["classes"].append("vae-twin")
            twins += 1
        elif outputs and _holds_widget(outputs[0]):
            outputs[0].children = [nodes.raw("", NO_KERNEL_NOTE, format="html")]
    if twins:
        doctree.append(nodes.raw("", SCRIPTS, format="html"))
    js_files = getattr(app.env, "nb_metadata", {}).get(app.env.docname, {}).get("js_files", {})
    for key in [key for key in js_files if key.startswith("ipywidgets")]:
        del js_files[key]  # the state script and the widget manager


def repository_url(setting: str) -> str | None:
    """The address in _config.yml (`repository: url:`), or None while it holds a placeholder."""
    return setting if setting.startswith(("https://", "http://", "git@")) else None


def _read_repository(app, config):
    """Keep `repository: url:` for the run page; the theme must not see a placeholder (it parses it)."""
    theme = config.html_theme_options or {}
    config.course_repository_url = theme.get("repository_url", "")
    config.course_repository_branch = theme.get("repository_branch", "main")
    if not repository_url(config.course_repository_url):
        theme.pop("repository_url", None)


def setup(app):
    app.connect("config-inited", _drop_thebe, priority=900)  # after every extension has connected
    app.add_config_value("course_repository_url", "", "env")
    app.add_config_value("course_repository_branch", "main", "env")
    app.connect("config-inited", _read_repository, priority=100)  # before the theme reads the address
    app.connect("doctree-read", _replace_widgets)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
