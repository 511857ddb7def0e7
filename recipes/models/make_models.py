"""Make the small example models the recipes under recipes/ use (committed, so the recipes run offline).

    .venv/bin/python recipes/models/make_models.py

- digits_cnn.h5: a tf_keras CNN on 16x16 grayscale digits (scikit-learn's, upscaled), 10 classes.
- digits_savedmodel/: the same network as a plain SavedModel (no Keras metadata) whose signature is
  named `classify` and takes uint8-range floats (0..255), to show signature selection and preprocessing.
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent


def digits_16x16() -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.stack([np.asarray(Image.fromarray(im.astype(np.float32), mode="F").resize((16, 16), Image.BILINEAR))
                       for im in digits.images])
    return (images / 16.0)[..., None].astype(np.float32), digits.target


def main() -> None:
    from converter.tf_env import keras, tf

    k, tf_ = keras(), tf()
    k.utils.set_random_seed(0)
    x, y = digits_16x16()
    model = k.Sequential([
        k.layers.Input((16, 16, 1)),
        k.layers.Conv2D(16, 3, activation="relu", name="conv1"),
        k.layers.MaxPooling2D(name="pool1"),
        k.layers.Conv2D(32, 3, activation="relu", name="conv2"),
        k.layers.GlobalAveragePooling2D(name="pool2"),
        k.layers.Dense(10, activation="softmax", name="classifier"),
    ], name="digits_cnn")
    model.compile(k.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=15, batch_size=64, verbose=0)
    model.save(HERE / "digits_cnn.h5")

    class Classifier(tf_.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        @tf_.function(input_signature=[tf_.TensorSpec([None, 16, 16, 1], tf_.float32, name="pixels")])
        def classify(self, pixels):
            return {"probabilities": self.net(pixels / 255.0, training=False)}

    module = Classifier(model)
    tf_.saved_model.save(module, str(HERE / "digits_savedmodel"), signatures={"classify": module.classify})
    print("accuracy on the training digits:", model.evaluate(x, y, verbose=0)[1])


if __name__ == "__main__":
    main()
