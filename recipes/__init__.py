"""The built-in recipes, installed with the package as ``editor.recipes.builtin`` (see pyproject.toml).

`wedit recipes` lists them; `wedit run NAME` runs one by name.
"""
