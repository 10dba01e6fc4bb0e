"""The shapes of the service's answers: components/schemas of its OpenAPI document (app/openapi.py).

Closed: every object lists all its fields (`additionalProperties: false`), and the fields keyed
by class name list this model's classes, so an answer with anything the document does not
describe fails validation.
"""
from __future__ import annotations

from app.errors import ERRORS
from classifier.engine_choice import PRECISIONS
from classifier.engines import ENGINES

PROBABILITY = {"type": "number", "minimum": 0, "maximum": 1}
COUNT = {"type": "integer", "minimum": 0}
SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
VERSION = {"type": "string", "pattern": r"^(\d{8}-\d{6}-[0-9a-f]{6}|[0-9a-f]{12})$",
           "description": "The model version that answered: its name under models/versions/, "
           "or for a bare export.pkl the first 12 hex of its sha256."}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


LABEL = ref("Label")


def closed(properties: dict, required=(), **extra) -> dict:
    """An object with these fields and no others."""
    return {"type": "object", **({"required": list(required)} if required else {}),
            "properties": properties, "additionalProperties": False, **extra}


def by_class(vocab: list[str], value: dict, every: bool = False, **extra) -> dict:
    """An object keyed by the model's classes, in vocab order (all of them when `every`)."""
    return closed({label: value for label in vocab}, vocab if every else (), **extra)


def prediction_fields(vocab: list[str]) -> dict:
    """The fields of one image's answer (classifier/prediction.py as_dict)."""
    return {
        "label": {**LABEL, "description": "Top-1 class (also when unsure)."},
        "index": {**COUNT, "maximum": len(vocab) - 1, "description": "Its index in vocab."},
        "confidence": {**PROBABILITY, "description": "Probability of the top class."},
        "unsure": {"type": "boolean", "description": "True when confidence < threshold: "
                   "treat the label as the closest match, not an answer."},
        "threshold": {**PROBABILITY, "nullable": True, "description": "The threshold "
                      "applied: ?threshold=, else UNSURE_THRESHOLD, else the model's "
                      "(export.json); null when there is none (never unsure)."},
        "top": {"type": "array", "minItems": 1, "maxItems": len(vocab), "description": "The "
                "top_k most probable classes, highest first.", "items": ref("Ranked")},
        "probabilities": by_class(vocab, PROBABILITY, every=True, description="Every class, "
                                  "in vocab order; sums to 1."),
        "version": VERSION,
        "explanation": ref("Explanation"),
    }


ENGINE_NAME = {"type": "string", "enum": list(ENGINES)}
PRECISION = {"type": "string", "enum": ["f32", "bf16", "int8"]}
ENGINE_CHOICE = closed({
    "engine": ENGINE_NAME,
    "precision": {"type": "string", "enum": list(PRECISIONS),
                  "description": "INFERENCE_PRECISION: the accuracy budget."},
    "reason": {"type": "string"},
    "measured": {"type": "string", "nullable": True,
                 "description": "When the candidates were timed, \"cache\" when read from the "
                 "cache, \"measuring\" while they are timed in the background (onnxruntime f32 "
                 "serves meanwhile), null when not measured."},
    "candidates": {"type": "array", "items": closed({
        "engine": ENGINE_NAME, "precision": PRECISION,
        "ms": {"type": "number", "minimum": 0, "description": "Median ms per image, batch 1."},
        "agreement": {**PROBABILITY, "description": "Top-1 agreement with learn.predict."},
        "gap": {"type": "number", "minimum": 0,
                "description": "Largest probability difference from learn.predict."},
        "skipped": {"type": "string", "description": "Why it cannot run here."},
        "error": {"type": "string", "description": "Why it failed to load or run the graph."},
    }, ["engine", "precision"])},
}, ["engine", "precision", "reason", "measured", "candidates"], nullable=True,
    description="Which engine runs the compiled graph and why (INFERENCE_PRECISION); null when "
    "PyTorch serves or INFERENCE_RUNTIME=onnx.")


def schemas(vocab: list[str], max_batch: int) -> dict:
    """components/schemas for a model with these classes."""
    prediction = prediction_fields(vocab)
    required = ["label", "index", "confidence", "unsure", "threshold", "top", "probabilities",
                "version"]
    runtime = {"type": "string", "enum": ["onnx", "torch", "onnx-lean"]}
    return {
        "Label": {"type": "string", "enum": vocab, "description": "One of the model's classes."},
        "Prediction": closed(prediction, required),
        "Ranked": closed({"label": LABEL, "probability": PROBABILITY}, ["label", "probability"]),
        "Explanation": closed({
            "method": {"type": "string", "enum": ["grad-cam"]},
            "label": {**LABEL, "description": "The class explained (the top class)."},
            "image": {"type": "string", "pattern": "^data:image/png;base64,",
                      "description": "The photo as the model saw it (resized and cropped), "
                      "with a heatmap over it: red is what pushed it most towards label."},
        }, ["method", "label", "image"], description="Only with ?explain=1: what the model "
           "looked at."),
        "NamedPrediction": closed({**prediction, "filename": {"type": "string"}},
                                  [*required, "filename"]),
        "BatchPrediction": closed({"predictions": {"type": "array", "minItems": 2,
                                                   "maxItems": max_batch,
                                                   "items": ref("NamedPrediction")}},
                                  ["predictions"]),
        "Error": closed({"error": closed({"code": {"type": "string", "enum": list(ERRORS)},
                                          "message": {"type": "string"}},
                                         ["code", "message"])}, ["error"]),
        "ModelInfo": closed({
            "version": VERSION,
            "refused": closed({"version": {"type": "string", "nullable": True},
                               "reason": {"type": "string"},
                               "at": {"type": "string", "format": "date-time"}},
                              ["version", "reason", "at"], nullable=True, description="The "
                              "last version models/live.json named that this worker would not "
                              "serve (it failed to load or to check), and why; null when none."),
            "vocab": {"type": "array", "items": LABEL, "minItems": 2},
            "arch": {"type": "string"},
            "image_size": {"type": "array", "nullable": True, "items": {"type": "integer"},
                           "minItems": 2, "maxItems": 2, "description": "[height, width]"},
            "metrics": closed({"validation": ref("Metrics"), "test": ref("Metrics")},
                              description="From export.json (none for a notebook export)."),
            "sha256": SHA256,
            "created_at": {"type": "string"},
            "runtime": runtime,
            "engine": ENGINE_CHOICE,
            "file": {"type": "string"},
            "metadata": {"type": "boolean", "description": "Whether export.json was found "
                         "(false for a notebook export)."},
            "recall": by_class(vocab, PROBABILITY, description="Validation recall per class "
                               "(empty without export.json)."),
            "train_images": {**COUNT, "nullable": True},
            "unsure": closed({"threshold": {**PROBABILITY, "nullable": True},
                              "source": {"type": "string", "nullable": True,
                                         "enum": ["UNSURE_THRESHOLD", "export.json", None]},
                              "method": {"type": "string", "nullable": True,
                                         "description": "How training chose it."}},
                             ["threshold", "source", "method"]),
            "explanations": {"type": "boolean", "description": "Whether ?explain=1 works."},
            "shadow": ref("Shadow"),
        }, ["version", "refused", "vocab", "arch", "image_size", "metrics", "sha256", "created_at", "runtime",
            "engine", "metadata", "recall", "train_images", "unsure", "explanations", "shadow"]),
        "Shadow": closed({
            "version": {"type": "string", "description": "SHADOW_MODEL."},
            "share": PROBABILITY,
            "serving": {"type": "boolean", "description": "Whether it loaded and answers."},
            "refused": {"type": "string", "nullable": True,
                        "description": "Why it failed to load or to check; null when loaded."},
        }, ["version", "share", "serving", "refused"], nullable=True, description="The shadow "
           "candidate (SHADOW_MODEL); null when none is set."),
        "ShadowField": closed({
            "shadow": ref("Shadow"),
            "pairs": {"type": "array", "items": ref("ShadowPair")},
        }, ["shadow", "pairs"]),
        "ShadowPair": closed({
            "live": {"type": "string"}, "shadow": {"type": "string"},
            "images": COUNT, "agreed": COUNT,
            "agreement": {**PROBABILITY, "nullable": True, "description": "Share of images "
                          "whose top-1 class from the shadow equals the live model's."},
            "unsure_rate": {**PROBABILITY, "nullable": True,
                            "description": "The shadow's \"not sure\" share at its threshold."},
            "per_class": {"type": "array", "description": "By the shadow's top-1 class.",
                          "items": closed({"label": {"type": "string"}, "images": COUNT,
                                           "unsure": COUNT,
                                           "unsure_rate": {**PROBABILITY, "nullable": True}},
                                          ["label", "images", "unsure", "unsure_rate"])},
            "requests": closed({"shadowed": COUNT, "dropped": COUNT, "failed": COUNT},
                               ["shadowed", "dropped", "failed"]),
        }, ["live", "shadow", "images", "agreed", "agreement", "unsure_rate", "per_class",
            "requests"], description="One live version and the shadow beside it, all workers."),
        "Metrics": closed({
            "n": COUNT, "accuracy": PROBABILITY, "error_rate": PROBABILITY,
            "loss": {"type": "number", "minimum": 0},
            "per_class": by_class(vocab, ref("ClassMetrics")),
            "confusion_matrix": {"type": "array", "items": {"type": "array", "items": COUNT},
                                 "description": "Rows: actual class, columns: predicted."},
        }, ["n", "accuracy", "error_rate", "loss", "per_class", "confusion_matrix"],
            description="One split's metrics (training/evaluate.py)."),
        "ClassMetrics": closed({"precision": PROBABILITY, "recall": PROBABILITY,
                                "f1": PROBABILITY, "support": COUNT},
                               ["precision", "recall", "f1", "support"]),
        "Status": closed({"status": {"type": "string", "enum": ["ok", "ready"]},
                          "runtime": runtime,
                          "explanations": {"type": "string",
                                           "enum": ["ready", "loading", "failed", "off"],
                                           "description": "Whether explain=1 works in the "
                                           "process that answered: `loading` right after "
                                           "start-up while PyTorch loads behind the compiled "
                                           "graph (503 `explanations_loading` meanwhile)."}},
                         ["status"]),
        "Feedback": closed({
            "time": {"type": "string", "format": "date-time"},
            "client": {"type": "string", "description": "Who sent it: key:<id of the API "
                       "key> or ip:<address>."},
            "image": {"type": "string", "description": "Where the image's pixels are stored, "
                      "under FEEDBACK_DIR: <label>/<sha256>.jpg."},
            "sha256": SHA256, "label": LABEL,
            "predicted": {**LABEL, "description": "What the model says of the image."},
            "confidence": PROBABILITY, "model_sha256": SHA256,
            "request_id": {"type": "string", "nullable": True},
            "review": {"type": "string", "enum": ["unsure", "sample"], "description":
                       "Filed from the review queue (/review): why the image was queued."},
        }, ["time", "client", "image", "sha256", "label", "predicted", "confidence",
            "model_sha256", "request_id"], description="The line appended to FEEDBACK_DIR/feedback.jsonl."),
    }
