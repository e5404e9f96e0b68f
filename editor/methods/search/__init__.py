"""`wedit search`: one multi-objective search across steering bakes and head removals, scored on unseen data.

Vectors and head scores come from the build fold of the identity-and-attribute
split (``editor.data.splits``); every trial is applied with run-time hooks and
scored on the select fold (bias) and on ordinary text (damage); Optuna proposes
the trials. The test fold is read only after the search, for the report.
"""
