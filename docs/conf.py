project = "numpyro_ebm"
author = "numpyro_ebm contributors"
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.doctest",
]
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
intersphinx_mapping = {}
nitpicky = False
html_theme = "alabaster"
exclude_patterns = ["_build"]
napoleon_use_ivar = True
