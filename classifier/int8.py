"""An int8 copy of the compiled graph, for INFERENCE_PRECISION=int8 only.

ONNX Runtime's static quantization: QDQ, weights int8 per output channel, activations uint8
(u8 x s8 is the product AVX-512 VNNI and AMX compute; int8 activations made onnxruntime 3x
slower here), ranges from the 99.999th percentile of each tensor. It is calibrated on the
model's examples mirrored left to right: images like those it is scored on
(classifier/engine_choice.py), not the same ones. Both onnxruntime and OpenVINO run the QDQ
graph in int8. On a resnet18 at 224 px on an AVX-512 VNNI CPU it was 3.5x faster than f32 at
one thread, with probabilities 0.005-0.19 away, by model (docs/decisions.md): outside the
`auto` budget, so it serves only where the user admits it.

The copy sits beside the graph (export.int8.onnx) and counts only while the graph's sidecar
records its sha256: a stale copy of another model is never opened. Quantizing needs the
`onnx` package (the compile step's image); running the copy needs only the engine.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from classifier.model_files import sha256_file

SUFFIX = ".int8.onnx"


def int8_path(graph: str | os.PathLike) -> Path:
    """Where the int8 copy of an .onnx graph lives: export.onnx -> export.int8.onnx."""
    return Path(graph).with_suffix(SUFFIX)


def checked_int8(graph: bytes | str | os.PathLike) -> tuple[str, str] | None:
    """(path, sha256) of the int8 copy of `graph` (an .onnx file's path) when its sidecar
    (export.onnx.json) records that file's sha256, else None (bytes, no copy, or a stale one)."""
    if isinstance(graph, bytes):
        return None
    path = int8_path(graph)
    try:
        recorded = json.loads(Path(graph).with_suffix(".onnx.json").read_text()).get("int8_sha256")
        if recorded and path.is_file() and sha256_file(path) == recorded:
            return str(path), recorded
    except (OSError, ValueError, AttributeError):
        pass
    return None


def quantize(graph: bytes, calibration: np.ndarray) -> bytes:
    """`graph` (ONNX bytes, input named "input") quantized to int8, its activation ranges
    calibrated on `calibration` ((n, 3, height, width) float32, as the network takes them)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration[i:i + 1] for i in range(len(calibration)))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch}

    root, level = logging.getLogger(), logging.getLogger().level
    with tempfile.TemporaryDirectory(prefix="int8-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        root.setLevel(logging.ERROR)  # its progress prints and per-tensor warnings, not ours
        try:
            source, prepared, quantized = (Path(tmp) / name for name in ("f32.onnx", "pre.onnx", "int8.onnx"))
            source.write_bytes(graph)
            quant_pre_process(str(source), str(prepared))  # shape inference and folding, as ORT advises
            quantize_static(str(prepared), str(quantized), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.Percentile)
            return quantized.read_bytes()
        finally:
            root.setLevel(level)
