"""hgn: Hamiltonian Generative Networks and Neural Hamiltonian Flows in PyTorch."""

__version__ = "0.1.0"
