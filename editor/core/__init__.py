"""Model-independent core: the architecture table, model facts, plans, the bake compiler, hooks and capabilities."""
