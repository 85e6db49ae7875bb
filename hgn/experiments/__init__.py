"""Experiments assembled from the pipeline's parts: :mod:`hgn.experiments.reproduce`,
the paper's comparison (Tables 1–2, Figures 6–8) in one resumable command."""
