"""Example Ferry recipes: sequence classifiers (a GRU, a small Transformer encoder) over tabular rows."""
