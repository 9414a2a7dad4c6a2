"""Example Ferry recipes: text classifiers (a GRU, a small Transformer encoder) that read tabular rows too."""
