"""Activation steering: vectors from labelled statements, probes, and three ways to bake them.

1. ``statements``: biased and neutral statements (SeeGULL, or a labelled file).
2. ``capture``: mean-pooled residual stream after every block, every head's input to W_O and every
   neuron's input to down_proj, averaged per class; and the same activations' moments on ordinary text.
3. ``probes``: per-layer L2 logistic regression and the difference-of-means vectors.
4. Bakes: ``directions`` (a residual add of -alpha * v; the whitened direction ablated from every
   writer) and ``steer2edit`` (rank-1 edits of single heads and neurons under one elastic-net budget).
5. ``sweep``: every candidate applied with hooks, scored on held-out pairs and on damage; one plan per bake.
"""
