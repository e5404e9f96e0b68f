"""Recipes: the schema, the runner and its stages."""
