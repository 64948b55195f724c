"""What runs a model on inputs: the feature extractor (hidden states, log-odds, attributions, cached),
the item types detectors score (TextItems, ModelItems), and residual-stream interventions."""
