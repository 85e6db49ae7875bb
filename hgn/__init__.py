"""hgn: Hamiltonian Generative Networks and Neural Hamiltonian Flows in PyTorch."""

__version__ = "0.1.0"


def load(run: str, device: str = "cpu"):  # -> hgn.models.SequenceModel, imported lazily
    """The trained model of a run directory, ready for ``encode``, ``rollout``,
    ``decode``, ``hamiltonian``, ``predict`` and ``sample`` (weights-only loading)."""
    from hgn.training.config import load_model

    return load_model(run, device)[0]
