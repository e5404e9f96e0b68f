"""The built-in recipes, installed with the package as ``editor.builtin_recipes`` (see pyproject.toml).

`wedit recipes` lists them; `wedit run NAME` runs one by name.
"""
