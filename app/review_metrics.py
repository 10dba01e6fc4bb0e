"""The review queue's Prometheus metrics (app/review_queue.py): images queued and why,
images dropped and why, and what reviewers did with them."""
from __future__ import annotations

from prometheus_client import Counter

QUEUED = Counter("classifier_review_queued_total", "Images kept for review, by why: "
                 "unsure (below the threshold) or sample (REVIEW_SAMPLE).", ["reason"])
DROPPED = Counter("classifier_review_dropped_total", "Images that would have been kept for "
                  "review but were not: full (REVIEW_MAX_FILES or REVIEW_MAX_MB), busy (the "
                  "writer's backlog was full) or error (logged).", ["reason"])
REVIEWED = Counter("classifier_review_done_total", "Queued images a reviewer labelled (filed "
                   "as a correction) or discarded.", ["outcome"])


def record_queued(reason: str) -> None:
    QUEUED.labels(reason=reason).inc()


def record_dropped(reason: str) -> None:
    DROPPED.labels(reason=reason).inc()


def record_reviewed(outcome: str) -> None:
    REVIEWED.labels(outcome=outcome).inc()
