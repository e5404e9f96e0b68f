"""Trained fits: edits whose parameters are learned by gradient descent on the bias itself, the model frozen.

Each fit trains a few parameters (``erasure``: directions projected out of the stream; ``unlink``: low-rank MLP
updates) to the squared association gap of build-fold stereotypes under a KL penalty on ordinary text
(``loop``), through the hooks of the very edits it hands to the bake, so what was trained is what is exported.
`wedit fit` runs one on its own and reports it on held-out groups (``run``); the search scales a fit's edits.
"""
