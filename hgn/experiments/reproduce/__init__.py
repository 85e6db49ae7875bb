"""One command for the paper's comparison: datasets → every model on every system →
Tables 1–2 on the paper's noisy data and on clean data, the extrapolation table, sample
physics, Figures 6–8 and a static ``report.html``.

The unit of work is a *cell*, one ``(system, model)`` pair. A cell trains its model
twice with the shared trainer (``hgn train``'s code): on the paper's data, with fresh
observation noise in every frame, and on the same system without noise. It evaluates
both with the shared evaluator (``hgn evaluate``'s code: Tables 1–2, the noise floor,
sample physics), runs the extrapolation protocol (:mod:`hgn.evaluation.extrapolate`) on
a clean long test set with the clean-data model, renders its rollouts, and finally
writes ``cells/SYSTEM/MODEL/result.json`` atomically. A cell whose result exists is
finished and is never recomputed or overwritten, so rerunning the command resumes where
it stopped; a cell interrupted mid-way resumes from its checkpoints and finished stages.
The tables, figures and the report are rebuilt from all finished cells at the end of
every run (cheap), so a partial run still yields a readable, honestly labelled report.

Why two regimes (docs/SCIENCE.md §2, "Noise, decided"): the paper's per-frame noise puts
a floor under every model's error, so on its data the comparison is made on the *excess*
over that floor; on clean data there is no floor and the raw MSE is compared. Learned dynamics
(forward, backward, 2×, ½×) are judged on clean data, as the later benchmark does.

The rows are the paper's, plus an anti-collapse row for each HNN baseline (an honest
best effort: autoencoder warm-up, standardised latent, down-weighted dynamics losses)
and HGN++ (docs/SCIENCE.md §3a). HGN++'s cell trains a third run, its own recipe: clean long
sequences (the profile's ``hgnpp_steps``) with its own budget; its Tables 1–2 rows are
the two runs made like every other row's (equal data and budget), its extrapolation and
samples rows the long run's, labelled so (``profiles.LONG_RUN`` says why).

The modules, in the order data flows through them:

* ``profiles``: the tables' rows and columns, and the profiles that size a run;
* ``cells``: training, evaluating and drawing one cell, and reading finished cells;
* ``tables`` and ``figures``: the tables, the bars and the figures from finished cells;
* ``report``: results.json, the Markdown files and report.html (``report.html.template``);
* ``run``: the command itself, which claims the directory and runs the cells.
"""

from hgn.experiments.reproduce.cells import VPT_FRACTION, finished_cells, run_cell
from hgn.experiments.reproduce.profiles import (
    ANTI_COLLAPSE,
    HNN_MODELS,
    LONG_LABEL,
    LONG_MODELS,
    LONG_RUN,
    MODEL_LABELS,
    MODEL_ORDER,
    PROFILES,
    REGIMES,
    ROWS,
    SYSTEM_ORDER,
    Profile,
    Row,
    choose,
    get_profile,
)
from hgn.experiments.reproduce.report import build_outputs, write_report
from hgn.experiments.reproduce.run import reproduce
from hgn.experiments.reproduce.tables import BAR, PUBLISHED_MSE

__all__ = [
    "ANTI_COLLAPSE",
    "BAR",
    "HNN_MODELS",
    "LONG_LABEL",
    "LONG_MODELS",
    "LONG_RUN",
    "MODEL_LABELS",
    "MODEL_ORDER",
    "PROFILES",
    "PUBLISHED_MSE",
    "REGIMES",
    "ROWS",
    "SYSTEM_ORDER",
    "VPT_FRACTION",
    "Profile",
    "Row",
    "build_outputs",
    "choose",
    "finished_cells",
    "get_profile",
    "reproduce",
    "run_cell",
    "write_report",
]
