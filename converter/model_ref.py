"""A model on disk, as the stages and exporters pass it around."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class ModelRef:
    """A model folder on disk.

    kind 'keras': a tf_keras model saved in the Keras SavedModel format (it is also a valid
    SavedModel, so SavedModel-based converters take it directly).
    kind 'savedmodel': a plain SavedModel with no Keras metadata.
    """

    path: Path
    kind: Literal["keras", "savedmodel"]
    signature: str = "serving_default"
    trusted_code: bool = False  # the recipe said model.trust_model_code: Lambda bytecode may be deserialised

    def load_keras(self):
        """Load the tf_keras model, inside tfmot's quantize scope so QAT models load too, and in tf_keras's safe
        mode unless the recipe trusts the model's code (a second guard behind converter.keras_code)."""
        if self.kind != "keras":
            raise TypeError(f"{self.path} is a plain SavedModel, not a Keras model")
        from converter.sources import keras_safe_mode
        from converter.tf_env import keras, tfmot

        with tfmot().quantization.keras.quantize_scope(), keras_safe_mode(self.trusted_code):
            return keras().models.load_model(str(self.path), compile=False)

    def load_signature(self):
        """Load the SavedModel and return (loaded object, concrete signature function)."""
        from converter.tf_env import tf

        loaded = tf().saved_model.load(str(self.path))
        if self.signature not in loaded.signatures:
            from converter.errors import ModelError
            from converter.suggest import did_you_mean

            raise ModelError(f"{self.path}: no signature '{self.signature}'{did_you_mean(self.signature, loaded.signatures)}")
        return loaded, loaded.signatures[self.signature]
