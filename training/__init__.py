"""Offline training: a folder of labelled images -> models/export.pkl, export.json, report, examples.

    python -m training.train [DATA_DIR] [options]      # train (no DATA_DIR: the digits demo)
    python -m training.evaluate MODEL.pkl DATA_DIR     # score an export on a labelled folder

Modules: `train` (the CLI; read it top to bottom), `data` (find, verify and split the images;
the DataBlock), `model` (architecture and weights -> fastai learner), `fit` (the phases:
interrupt, checkpoint, resume), `distributed` (several processes under `accelerate launch`),
`checkpoint` (its files), `evaluate` (metrics and the "not sure"
threshold), `export` (export.pkl, export.json, examples/), `report` (plots and report.html from
templates/), `demo_data` (scikit-learn's digits written as PNG folders). Everything the exported
learner pickles lives in `classifier/` or fastai itself, never here, so the serving image does
not need this package.
"""

import argparse


class UsageError(Exception):
    """A problem with the user's data or options: printed as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line (`error: ... (see --help)`), exit code 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")
