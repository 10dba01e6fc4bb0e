"""Real images for schemathesis (loaded by test_schemathesis.py through SCHEMATHESIS_HOOKS).

The document can say that `file`, an image/* body and `image` carry an image, but no
schema can say "bytes that decode": left alone, schemathesis fills them with random
bytes, which the server rightly refuses (400 invalid_image) and the positive-data check
then reports as a valid request rejected. So schema-valid images are real images here,
of every format uploads accept and random sizes and pixels; junk bytes are the hostile
corpus's job (harness/hostile.py, tests/app/test_errors.py).
"""
from __future__ import annotations

import base64

import schemathesis
from hypothesis import strategies as st

from harness.images import FORMATS, MIME, image_bytes


@st.composite
def images(draw, formats=tuple(FORMATS)) -> bytes:
    fmt = draw(st.sampled_from(formats))
    size = (draw(st.integers(1, 64)), draw(st.integers(1, 64)))
    mode = draw(st.sampled_from(["RGB", "L", "P", "RGBA"] if fmt == "PNG" else ["RGB", "L"]))
    return image_bytes(fmt, size, mode, seed=draw(st.integers(0, 2**16)))


schemathesis.openapi.format("binary", images())
schemathesis.openapi.format("byte", images().map(lambda data: base64.b64encode(data).decode()))
for fmt in FORMATS:
    schemathesis.openapi.media_type(MIME[fmt], images((fmt,)))
