"""The command line the long runs share: --model and --json, plus their own flags."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness import ROOT


def benchmark_args(doc: str, *add, argv=None,
                   model_optional: bool = False) -> tuple[argparse.Namespace, Path | None]:
    """The long runs' command line: --model and --json, plus `add` as (flag, kwargs) pairs.
    Exits with a one-line message when the model file is missing. With `model_optional`,
    --model has no default and the model is None when it is not given."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model", default=None if model_optional
                        else str(ROOT / "models" / "export.pkl"))
    parser.add_argument("--json", help="also write the figures to this file")
    for flag, kwargs in add:
        parser.add_argument(flag, **kwargs)
    args = parser.parse_args(argv)
    if args.model is None:
        return args, None
    model = Path(args.model)
    if not model.is_file():
        sys.exit(f"no model at {model}: train one (make train) or pass --model")
    return args, model
