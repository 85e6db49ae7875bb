"""hgn: Hamiltonian Generative Networks and Neural Hamiltonian Flows in PyTorch."""

__version__ = "0.1.0"
"""The one place of hgn's version: pyproject.toml reads it (``dynamic = ["version"]``)."""


def load(run: str, device: str = "cpu"):  # -> hgn.models.SequenceModel, imported lazily
    """The trained model of a run directory, ready for ``encode``, ``rollout``,
    ``decode``, ``hamiltonian``, ``predict`` and ``sample`` (weights-only loading).

    A model that samples its training data's aggregate posterior (HGN++) carries it in
    the run (fitted when training ended), so ``load(run).sample(n, steps)`` draws what
    ``hgn sample`` draws wherever the run is copied; a run written before that is fitted
    to the training data it records where that data still is, else it samples N(0, I).
    ``model.sampling_from`` says which."""
    from hgn.runs import fit_recorded, open_sequence_model

    model, saved = open_sequence_model(run, device)
    fit_recorded(model, saved)
    return model
