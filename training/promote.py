"""Put a version live, only when it is not measurably worse than the live one.

    python -m training.promote VERSION [--models models | --models s3://BUCKET/PREFIX] [--force]

Runs `training.compare live VERSION` on the frozen test set first: the pointer
(models/live.json) moves unless the verdict is "worse"; --force moves it anyway and says so.
Every move is appended to models/history.jsonl with the verdict and p-value. The server
follows the pointer. Exit codes: 0 moved (or already live), 1 refused as worse or a bucket
that does not answer, 2 bad input.
"""
from __future__ import annotations

import sys

from classifier import versions
from training import UsageError


def main(argv=None) -> int:
    from training import compare
    from training.versions import models_parser, resolve

    parser = models_parser("python -m training.promote", __doc__)
    parser.add_argument("version", metavar="VERSION", help="the version to put live")
    parser.add_argument("--force", action="store_true",
                        help="move the pointer even when compare finds the version worse")
    args = parser.parse_args(argv)
    root = args.models
    try:
        name = resolve(root, args.version)
        live = versions.live_version(root)
        if name == live:
            print(f"{name} is already live; nothing moved")
            return 0
        details = {}
        if live is not None:
            from classifier.model_bucket import local_models
            with local_models(root, [live, name]) as local:  # a bucket's: copied here
                a, b, test, _, _ = compare.compare(local, live, name)
            print(compare.summary(a, b, test))
            details = {"verdict": compare.verdict(test), "p_value": test["p_value"],
                       "against": live, "test_images": a.metrics["n"]}
            if details["verdict"] == "worse" and not args.force:
                print(f"refused: {name} is worse than the live {live} (p = "
                      f"{test['p_value']:.3g}); the pointer stays. --force puts it live anyway.",
                      file=sys.stderr)
                return 1
            if details["verdict"] == "worse":
                details["forced"] = True
                print(f"--force: promoting {name} although it is worse than {live}; logged in "
                      f"{root}/{versions.HISTORY}", file=sys.stderr)
        versions.move_pointer(root, name, "promote", **details)
    except (UsageError, versions.VersionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a bucket that does not answer
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"live: {name} (was {live}); python -m training.rollback returns to {live}"
          if live else f"live: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
