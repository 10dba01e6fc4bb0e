"""The settings create_app is given are the ones its app acts on: no switch is read elsewhere."""
from __future__ import annotations

import pytest
from PIL import Image

from app import create_app
from app.config import ENV_NAMES, app_settings
from app.model_service import model_service
from app.uploads import Upload
from tests.images.conftest import big_photo, encode, flat_gray_jpeg


def decoded_size(app, data: bytes) -> tuple[int, int]:
    """The size an upload is decoded to, before the model's own resize."""
    with app.app_context():
        (result,) = model_service().classify([Upload("p.jpg", data)], on_image=lambda im: im.size)
    return result.extra


def test_exact_decode_switched_off_by_create_app_overrides_the_environment(model_dir,
                                                                           monkeypatch):
    monkeypatch.setenv("EXACT_DECODE", "true")
    config = {name: "" for name in ENV_NAMES if name != "EXACT_DECODE"}
    config.update(MODEL_PATH=str(model_dir / "export.pkl"), INFERENCE_RUNTIME="torch")  # no ONNX export
    photo = encode(big_photo((1600, 1200)), "JPEG")
    from_environment = create_app(config)
    assert app_settings(from_environment).exact_decode
    assert decoded_size(from_environment, photo) == (1600, 1200)
    switched_off = create_app({**config, "EXACT_DECODE": "off"})
    assert not app_settings(switched_off).exact_decode
    assert max(decoded_size(switched_off, photo)) < 1600


def test_max_declared_pixels_above_250_mp_takes_effect(make_app, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after
    photo = flat_gray_jpeg(20480, 15360)  # declares 314.6 MP

    def post(app):
        return app.test_client().post("/predict", data=photo, content_type="image/jpeg")

    refused = post(make_app())
    assert refused.status_code == 413, refused.get_json()
    assert refused.get_json()["error"]["code"] == "image_too_large"
    answered = post(make_app(MAX_DECLARED_PIXELS="400000000"))
    assert answered.status_code == 200, answered.get_json()


@pytest.mark.parametrize("key", ["API_KEY", "CORS_ORIGINS"])
def test_views_read_the_settings_on_the_app(make_app, key):
    app = make_app(**{key: "https://a.example" if key == "CORS_ORIGINS" else "k3y"})
    response = app.test_client().post("/predict", headers={"Origin": "https://a.example"})
    if key == "API_KEY":
        assert response.status_code == 401
    else:
        assert response.headers["Access-Control-Allow-Origin"] == "https://a.example"
