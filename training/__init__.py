"""Offline training: a folder of labelled images -> a model version, models/versions/<name>/.

    python -m training.train [DATA_DIR] [options]      # train (no DATA_DIR: the digits demo)
    python -m training.evaluate MODEL.pkl DATA_DIR     # score an export on a labelled folder
    python -m training.versions | compare A B | promote VERSION | rollback

Modules: `train` (the CLI; read it top to bottom), `data` (find, verify and split the images;
the DataBlock), `model` (architecture and weights -> fastai learner), `fit` (the phases:
interrupt, checkpoint, resume), `distributed` (several processes under `accelerate launch`),
`checkpoint` (its files), `evaluate` (metrics and the "not sure"
threshold), `export` (the version folder), `test_set` (the frozen test set), `versions`,
`compare`, `promote`, `rollback` (list, compare on the frozen test set, move the pointer),
`report` (plots and report.html from templates/), `demo_data` (scikit-learn's digits written
as PNG folders). Everything the exported learner pickles lives in `classifier/` or fastai
itself, never here, so the server never imports this package (the image carries it only for
`promote` and `rollback` through `fly ssh console`).
"""

import argparse


class UsageError(Exception):
    """A problem with the user's data or options: printed as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line (`error: ... (see --help)`), exit code 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")
