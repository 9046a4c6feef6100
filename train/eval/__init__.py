"""Evaluation of pretrained backbones: kNN and linear probes per stage (the paper's Table 7), view-to-view
distances per stage (Fig. 3), per-level gradient maps (Fig. 4), plots. ``python -m train.eval --help``."""
