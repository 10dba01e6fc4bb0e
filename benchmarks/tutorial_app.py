"""The tutorial way, for comparison only: a plain Flask handler calling `learn.predict`.

This is what the fastai/fly.io tutorials deploy (`gunicorn tutorial_app:app`,
gunicorn's defaults: one sync worker), loading the same export.pkl.
"""
import os

from fastai.vision.all import PILImage, load_learner
from flask import Flask, jsonify, request

learn = load_learner(os.environ["MODEL_PATH"])
app = Flask(__name__)


@app.route("/predict", methods=["POST"])
def predict():
    img = PILImage.create(request.files["file"])
    label, index, probs = learn.predict(img)
    return jsonify(label=str(label), confidence=float(probs[index]),
                   probabilities={str(c): float(p) for c, p in zip(learn.dls.vocab, probs)})
