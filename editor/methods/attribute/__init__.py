"""BiasScope: contrastive pairs, per-head direct logit attribution, the k sweep, a zero_heads plan."""
