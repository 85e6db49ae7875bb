"""hgn: Hamiltonian Generative Networks and Neural Hamiltonian Flows in PyTorch."""

__version__ = "0.1.0"
"""The one place of hgn's version: pyproject.toml reads it (``dynamic = ["version"]``)."""


def load(run: str, device: str = "cpu"):  # -> hgn.models.SequenceModel, imported lazily
    """The trained model of a run directory, ready for ``encode``, ``rollout``,
    ``decode``, ``hamiltonian``, ``predict`` and ``sample`` (weights-only loading).

    A model that samples its training data's aggregate posterior (HGN++) is fitted to
    the training data the run records, as ``hgn sample`` and ``hgn evaluate`` do, so that
    ``load(run).sample(n, steps)`` draws what the CLI draws; where that data is gone it
    samples N(0, I), and ``model.sampling_from`` says so."""
    from hgn.evaluation.physics import fit_recorded
    from hgn.runs import open_sequence_model

    model, saved = open_sequence_model(run, device)
    fit_recorded(model, saved)
    return model
