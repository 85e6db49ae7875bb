"""One command for the paper's comparison: datasets → every model on every system →
Tables 1–2, Figures 6–8, the prefix protocol, and a static ``report.html``.

The unit of work is a *cell*, one ``(system, model)`` pair. A cell trains its model with
the shared trainer (``hgn train``'s code), evaluates it with the shared evaluator
(``hgn evaluate``'s code), renders its rollouts and animations, and finally writes
``cells/SYSTEM/MODEL/result.json`` atomically. A cell whose result exists is finished and
is never recomputed or overwritten, so rerunning the command resumes where it stopped; a
cell interrupted mid-training resumes from its last checkpoint. The tables, figures and
the report are rebuilt from all finished cells at the end of every run (cheap), so a
partial run still yields a readable, honestly labelled report.

Two protocols are evaluated:

* **paper** (Tables 1–2, Fig. 6–8): the encoder sees the whole sequence (HGN) or its
  first frame pair (HNN); error of the ``T``-step unroll, on train and test sequences.
* **prefix** (beyond the paper): infer from the first ``context`` frames and predict
  ``horizon`` further frames of longer test trajectories; per-step error curves and the
  valid prediction time. An encoder that sees all frames can score well on the paper's
  protocol by describing the sequence rather than learning its dynamics; here it cannot.
  HGN variants are retrained with ``input_frames = context`` for it; HNN reads only a
  frame pair anyway, so its paper-protocol model is evaluated as is.

The modules, in the order data flows through them:

* ``profiles``: the tables' rows and columns, and the profiles that size a run;
* ``cells``: training, evaluating and drawing one cell, and reading finished cells;
* ``tables`` and ``figures``: the paper's tables and figures from finished cells;
* ``report``: results.json, the Markdown tables and report.html (``report.html.template``);
* ``run``: the command itself, which claims the directory and runs the cells.
"""

from hgn.experiments.reproduce.cells import VPT_FRACTION, finished_cells, run_cell
from hgn.experiments.reproduce.profiles import (
    HNN_MODELS,
    MODEL_LABELS,
    MODEL_ORDER,
    PROFILES,
    SYSTEM_ORDER,
    Profile,
    choose,
    get_profile,
)
from hgn.experiments.reproduce.report import build_outputs, write_report
from hgn.experiments.reproduce.run import reproduce
from hgn.experiments.reproduce.tables import PUBLISHED_MSE

__all__ = [
    "HNN_MODELS",
    "MODEL_LABELS",
    "MODEL_ORDER",
    "PROFILES",
    "PUBLISHED_MSE",
    "SYSTEM_ORDER",
    "VPT_FRACTION",
    "Profile",
    "build_outputs",
    "choose",
    "finished_cells",
    "get_profile",
    "reproduce",
    "run_cell",
    "write_report",
]
