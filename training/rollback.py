"""Return the pointer to the version that was live before the last move.

    python -m training.rollback [--models models | --models s3://BUCKET/PREFIX]

The move is appended to models/history.jsonl like a promote; a second rollback returns to
where the first started. Exit codes: 0 moved, 1 a bucket that does not answer, 2 nothing to
return to or bad input.
"""
from __future__ import annotations

import sys

from classifier import versions


def main(argv=None) -> int:
    from training.versions import models_parser

    args = models_parser("python -m training.rollback", __doc__).parse_args(argv)
    try:
        pointer = versions.read_pointer(args.models)
        if pointer is None or not pointer.get("previous"):
            raise versions.VersionError(f"{args.models} has no previous version to return to "
                                        f"({versions.POINTER} {'names none' if pointer else 'is absent'}).")
        versions.move_pointer(args.models, pointer["previous"], "rollback")
    except versions.VersionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a bucket that does not answer
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"live: {pointer['previous']} (was {pointer['version']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
