"""Bias and damage metrics, the judge, prompting baselines, and the evaluation report."""
