"""The methods that find what to edit: BiasInject, BiasScope attribution, steering, imported vectors."""
