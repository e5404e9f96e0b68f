"""BiasInject: train one new token's vectors on biased paragraphs."""
