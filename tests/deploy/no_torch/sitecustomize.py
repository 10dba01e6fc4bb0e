"""On PYTHONPATH, makes torch, torchvision, fastai and openvino look not installed, as in the lean
image.

Python imports `sitecustomize` at start-up, before any of our code, so a subprocess started
with this folder first on PYTHONPATH cannot find them however it asks: `import torch`
raises ModuleNotFoundError and `importlib.util.find_spec("torch")` is None
(tests/deploy/test_compiled_model.py runs the batch CLI and the app that way).
"""
import sys

BLOCKED = ("torch", "torchvision", "fastai", "openvino")


class Hiding:
    """A meta-path finder that finds what `finder` finds, except the blocked packages."""

    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            return None
        return self.finder.find_spec(name, path, target)

    def __getattr__(self, attribute):  # invalidate_caches, find_distributions, ...
        return getattr(self.finder, attribute)


sys.meta_path[:] = [Hiding(finder) for finder in sys.meta_path]
