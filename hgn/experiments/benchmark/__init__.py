"""``hgn benchmark``: does the Hamiltonian prior matter? Models × datasets, each cell
trained for the same wall-clock minutes on the machine the command runs on, scored with
DeepMind's valid prediction time, SyMetric and hgn's own extrapolation protocol and
sample physics (docs/SCIENCE.md §7).

Why a new command and not a ``reproduce`` profile: a reproduction is the paper's
comparison, whose cells are *systems* × the paper's rows, each trained on two regimes
(noisy and clean) at a step budget with the paper's tables as the product; a profile
changes its sizes, not its shape. The benchmark differs in every one of those: its
cells are *datasets* (systems, DeepMind presets or any hgn dataset, imported ones
included) × any registered model, trained once on clean data for equal *minutes* (the
budget is the question: what does a fixed amount of compute buy each prior), and its
product is other metrics (DeepMind VPT, SyMetric) whose refusals ("cannot", "n/a") are
part of the table. Folding that into ``reproduce`` would put two shapes of result behind
one ``--profile`` flag, with options (``--minutes``, ``--datasets``) that mean nothing to
the other profiles. What the two share is reused, not copied: the results-directory
guard, the finished-cell/stage bookkeeping, the job pool, the table writers and the
report's stylesheet and image check.

The modules: ``profiles`` (default rows and columns, the ``smoke`` and ``small`` sizes,
option checks), ``metrics`` (the SyMetric and DeepMind-VPT glue), ``cells`` (train and
score one cell), ``report`` (results.json, benchmark.md, report.html, the figures),
``run`` (the command).
"""

from hgn.experiments.benchmark.profiles import (
    DATASET_ORDER,
    MAX_MINUTES,
    MODEL_ORDER,
    SIZES,
    Settings,
    Size,
)
from hgn.experiments.benchmark.run import benchmark

__all__ = ["DATASET_ORDER", "MAX_MINUTES", "MODEL_ORDER", "SIZES", "Settings", "Size", "benchmark"]
