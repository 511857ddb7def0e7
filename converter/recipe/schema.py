"""The recipe schema: every key a recipe may hold, its type, default and meaning.

This module imports no TensorFlow: `convert validate` runs every check here.
docs/recipe-reference.md is generated from these classes (`convert schema-docs`).
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from converter.backends import BACKENDS
from converter.recipe.types import ByteSize, ExistingPath, Strict, _resolve, problems, shown
from converter.suggest import did_you_mean

KERAS_APPLICATIONS = (
    "ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtSmall", "ConvNeXtTiny", "ConvNeXtXLarge",
    "DenseNet121", "DenseNet169", "DenseNet201",
    "EfficientNetB0", "EfficientNetB1", "EfficientNetB2", "EfficientNetB3", "EfficientNetB4",
    "EfficientNetB5", "EfficientNetB6", "EfficientNetB7",
    "EfficientNetV2B0", "EfficientNetV2B1", "EfficientNetV2B2", "EfficientNetV2B3",
    "EfficientNetV2L", "EfficientNetV2M", "EfficientNetV2S",
    "InceptionResNetV2", "InceptionV3", "MobileNet", "MobileNetV2", "MobileNetV3Large",
    "MobileNetV3Small", "NASNetLarge", "NASNetMobile", "RegNetX002", "RegNetY002",
    "ResNet101", "ResNet101V2", "ResNet152", "ResNet152V2", "ResNet50", "ResNet50V2",
    "VGG16", "VGG19", "Xception",
)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")  # whole value (fullmatch): a folder name
Backend = Literal[tuple(BACKENDS)]  # type: ignore[valid-type]  # the names in converter/backends.py


def _name(value: str) -> str:
    if not NAME.fullmatch(value):
        raise PydanticCustomError("name", "{v} is not a valid name: use letters, digits, '.', '_' and '-' "
                                  "(at most 100, starting with a letter or digit)", {"v": shown(value)})
    return value


# ----------------------------------------------------------------------------- model
class ModelSpec(Strict):
    """The source model: a file or folder (`path`), or a Keras application by name."""

    path: Optional[ExistingPath] = Field(None, description="SavedModel folder, Keras .h5, Keras SavedModel folder or legacy .keras file.")
    application: Optional[str] = Field(None, description="Keras application name, e.g. MobileNetV2.")
    args: dict[str, Any] = Field(default_factory=dict, description="Constructor arguments of the application (alpha, input_shape, classes, ...).")
    weights: str = Field("none", description="Application weights: 'imagenet' (from the Keras cache ~/.keras/models), 'none', or a weights file path.")
    signature: str = Field("serving_default", description="SavedModel signature to load.")
    trust_model_code: bool = Field(False, description="Allow loading models that carry Python code (Keras Lambda layers).")
    seed: int = Field(0, description="Seed of the random initial weights of an 'application' built with weights: none.")
    input_shape: Optional[Union[list[int], dict[str, list[int]]]] = Field(
        None, description="Fix the input shape (without the batch dimension) of a model whose inputs leave dimensions "
        "open, e.g. [224, 224, 3]; {input name: shape} for several inputs. The model is re-traced with that shape "
        "before anything else, so conversion, synthetic data and timing all use it.")
    custom_objects: Optional[ExistingPath] = Field(
        None, description="A Python file defining the model's custom layers and functions (its CUSTOM_OBJECTS dict, "
        "else every public class and function in it), given to Keras when the model loads. Runs code: needs "
        "trust_model_code: true.")

    @field_validator("weights")
    @classmethod
    def _weights_file(cls, value: str, info: ValidationInfo) -> str:
        if value in ("none", "imagenet"):
            return value
        return str(_resolve(value, info, must_exist=True))

    @field_validator("application")
    @classmethod
    def _known_application(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and value not in KERAS_APPLICATIONS:
            raise PydanticCustomError("application", "unknown Keras application {v}{hint}",
                                      {"v": shown(value), "hint": did_you_mean(value, KERAS_APPLICATIONS)})
        return value

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSpec":
        if (self.path is None) == (self.application is None):
            raise PydanticCustomError("model_source", "give exactly one of 'path' or 'application'", {})
        if self.path is not None and (self.args or self.weights != "none" or "seed" in self.model_fields_set):
            raise PydanticCustomError("model_source", "'args', 'weights' and 'seed' apply to 'application' only", {})
        if self.custom_objects is not None and not self.trust_model_code:
            raise PydanticCustomError("model_source", "custom_objects runs the Python file {p}: set trust_model_code: "
                                      "true to allow it", {"p": shown(str(self.custom_objects))})
        if self.custom_objects is not None and self.custom_objects.suffix != ".py":
            raise PydanticCustomError("model_source", "custom_objects must be a .py file, got {p}",
                                      {"p": shown(self.custom_objects.name)})
        shapes = self.input_shape.values() if isinstance(self.input_shape, dict) else [self.input_shape or []]
        if any(d <= 0 for shape in shapes for d in shape):
            raise PydanticCustomError("model_source", "input_shape: every dimension must be a positive integer", {})
        return self


# ----------------------------------------------------------------------------- data
def _fraction_or_number(value: Any) -> Any:
    """Accept 0.0078 or the text '1/127.5'."""
    if isinstance(value, str) and "/" in value:
        num, den = value.split("/", 1)
        try:
            return float(num) / float(den)
        except (ValueError, ZeroDivisionError, OverflowError):
            raise PydanticCustomError("number", "expected a number or 'a/b', got {v}", {"v": shown(value)}) from None
    return value


class Preprocess(Strict):
    """Declared preprocessing, applied in this order: resize, channels, scale, mean, std, dtype."""

    resize: Optional[tuple[int, int]] = Field(None, description="Target [height, width]; none keeps the source size.")
    resize_mode: Literal["direct", "crop"] = Field("direct", description="'direct' resizes to `resize`; 'crop' scales the shorter side to `crop_from` and centre-crops to `resize`.")
    crop_from: Optional[int] = Field(None, description="Shorter side before the centre crop (mode 'crop'); default resize/0.875.")
    channels: Literal["rgb", "bgr", "gray"] = Field("rgb", description="Channel order of the model input. Grayscale sources are replicated for rgb/bgr.")
    scale: Annotated[float, Field(description="Multiply pixel values by this first (e.g. '1/127.5').")] = 1.0
    mean: Union[float, list[float]] = Field(0.0, description="Subtracted after scaling, per channel or one value.")
    std: Union[float, list[float]] = Field(1.0, description="Divided by after subtracting the mean.")
    dtype: Literal["float32", "uint8", "int8"] = Field("float32", description="Element type fed to the model.")

    @field_validator("scale", mode="before")
    @classmethod
    def _scale_text(cls, value: Any) -> Any:
        return _fraction_or_number(value)

    @model_validator(mode="after")
    def _crop_needs_size(self) -> "Preprocess":
        if self.resize_mode == "crop" and self.resize is None:
            raise PydanticCustomError("preprocess", "resize_mode 'crop' needs 'resize'", {})
        return self


class DatasetSpec(Strict):
    """One dataset: an image folder, .npy/.npz arrays, scikit-learn digits or synthetic input."""

    source: Literal["folder", "arrays", "digits", "synthetic"] = Field(..., description="Where the samples come from.")
    path: Optional[ExistingPath] = Field(None, description="Image folder (one sub-folder per class) or .npy/.npz file.")
    labels_path: Optional[ExistingPath] = Field(None, description="Labels .npy next to an inputs .npy.")
    x_key: str = Field("x", description="Array name of the inputs in an .npz.")
    x_keys: Optional[dict[str, str]] = Field(
        None, description="Models with several inputs: {model input name: array name in the .npz}. Arrays of rank 3 "
        "or more are preprocessed as images; the others keep their values (token ids, masks, feature vectors).")
    y_key: Optional[str] = Field("y", description="Array name of the labels in an .npz (absent: no labels).")
    split: Literal["all", "train", "test"] = Field("all", description="Deterministic split of the samples.")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Fraction held out as 'test'.")
    seed: int = Field(0, description="Seed of the shuffle behind split and limit.")
    limit: Optional[int] = Field(None, gt=0, description="Keep at most this many samples (after the split).")
    shape: Optional[list[int]] = Field(None, description="Synthetic: one sample's shape, e.g. [32, 32, 3]. Default: the model's input.")
    count: int = Field(64, gt=0, description="Synthetic: number of samples.")
    int_range: tuple[int, int] = Field((0, 10), description="Synthetic: integer inputs (token ids, masks) are drawn "
                                       "uniformly from [low, high).")
    preprocess: Preprocess = Field(default_factory=Preprocess, description="Preprocessing applied to every sample.")

    @model_validator(mode="after")
    def _source_fields(self) -> "DatasetSpec":
        if self.source in ("folder", "arrays") and self.path is None:
            raise PydanticCustomError("dataset", "source '{s}' needs 'path'", {"s": self.source})
        if self.source == "arrays" and self.path is not None and self.path.suffix not in (".npy", ".npz"):
            raise PydanticCustomError("dataset", "source 'arrays' needs a .npy or .npz path, got {p}", {"p": shown(self.path.name)})
        if self.source == "folder" and self.path is not None and _is_file(self.path):
            raise PydanticCustomError("dataset", "source 'folder' needs a folder, got the file {p}", {"p": str(self.path)})
        if self.source in ("digits", "synthetic") and self.path is not None:
            raise PydanticCustomError("dataset", "source '{s}' takes no 'path'", {"s": self.source})
        if self.x_keys is not None and not (self.source == "arrays" and self.path is not None and self.path.suffix == ".npz"):
            raise PydanticCustomError("dataset", "x_keys needs source 'arrays' with an .npz path", {})
        if self.int_range[0] >= self.int_range[1]:
            raise PydanticCustomError("dataset", "int_range [low, high) needs low < high", {})
        return self


def _is_file(path: Any) -> bool:
    """An existing path that is not a folder (False when it cannot be looked at: the loader reports that)."""
    try:
        return path.exists() and not path.is_dir()
    except OSError:
        return False


class DataSection(Strict):
    """Datasets by role. Calibration falls back to train, then eval."""

    train: Optional[DatasetSpec] = Field(None, description="Training and fine-tuning data (train, prune, qat).")
    calibration: Optional[DatasetSpec] = Field(None, description="Calibration data for full-integer quantization.")
    eval: Optional[DatasetSpec] = Field(None, description="Evaluation data for verification.")

    def for_calibration(self) -> Optional[DatasetSpec]:
        return self.calibration or self.train or self.eval


# ----------------------------------------------------------------------------- pipeline
class Fit(Strict):
    """Training settings shared by train, prune and qat."""

    epochs: int = Field(1, ge=1, description="Epochs of (fine-)tuning.")
    batch_size: int = Field(32, ge=1, description="Batch size.")
    learning_rate: float = Field(1e-3, gt=0, description="Learning rate.")
    optimizer: Literal["adam", "sgd", "rmsprop"] = Field("adam", description="Optimizer.")
    lr_schedule: Literal["constant", "cosine"] = Field("constant", description="'cosine' decays the learning rate to 0 over all steps.")
    loss: Literal["sparse_categorical_crossentropy", "categorical_crossentropy", "mse", "mae"] = Field(
        "sparse_categorical_crossentropy", description="Loss.")
    from_logits: bool = Field(False, description="The model outputs logits, not probabilities.")
    seed: int = Field(0, description="Seed for weights init, shuffling and dropout.")


class StageBase(Strict):
    name: Optional[str] = Field(None, description="Name other stages and exports refer to; default the stage type.")
    input: Optional[str] = Field(None, description="Stage whose model this one takes ('source' for the loaded model). Set it to branch off the main line.")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: Optional[str]) -> Optional[str]:
        return value if value is None else _name(value)

    @property
    def stage_name(self) -> str:
        return self.name or self.stage  # type: ignore[attr-defined]


class TrainStage(StageBase, Fit):
    """Fit the model on data.train."""

    stage: Literal["train"]
    batchnorm_momentum: Optional[float] = Field(
        None, gt=0, lt=1, description="Set every BatchNormalization's momentum before training. Keras applications use "
        "0.99-0.999, whose moving statistics lag far behind on small datasets; 0.9 suits a few hundred steps.")


class PruneStage(StageBase, Fit):
    """Magnitude pruning with tensorflow-model-optimization, fine-tuned, then stripped."""

    stage: Literal["prune"]
    target_sparsity: float = Field(0.5, gt=0, lt=1, description="Final fraction of zero weights.")
    schedule: Literal["polynomial_decay", "constant"] = Field("polynomial_decay", description="Pruning schedule.")
    initial_sparsity: float = Field(0.0, ge=0, lt=1, description="Start sparsity (polynomial_decay).")
    frequency: int = Field(10, ge=1, description="Steps between pruning updates.")
    block_size: tuple[int, int] = Field((1, 1), description="Prune blocks of this shape.")
    structure: Optional[Literal["2:4"]] = Field(None, description="m-by-n structured sparsity.")
    skip_layers: list[str] = Field(default_factory=list, description="Layer-name globs left dense.")

    @model_validator(mode="after")
    def _structure_vs_block(self) -> "PruneStage":
        if self.structure and tuple(self.block_size) != (1, 1):
            raise PydanticCustomError("prune", "'structure' and 'block_size' cannot be combined", {})
        return self


class QatStage(StageBase, Fit):
    """Quantization-aware training with tensorflow-model-optimization."""

    stage: Literal["qat"]
    layers: Optional[list[str]] = Field(None, description="Layer-name globs to quantize-annotate; default the whole model.")


Stage = Annotated[Union[TrainStage, PruneStage, QatStage], Field(discriminator="stage")]
STAGE_TYPES = ("train", "prune", "qat")


# ----------------------------------------------------------------------------- verify
class Budget(Strict):
    """Accuracy budget. Unset entries are not checked."""

    max_top1_drop: Optional[float] = Field(None, ge=0, description="Largest allowed top-1 loss against the reference, as a fraction (0.01 = one point).")
    min_top1_agreement: Optional[float] = Field(None, ge=0, le=1, description="Smallest allowed share of samples whose top-1 matches the reference.")
    max_abs_diff: Optional[float] = Field(None, ge=0, description="Largest allowed max |artifact - reference|.")
    max_mean_abs_diff: Optional[float] = Field(None, ge=0, description="Largest allowed mean |artifact - reference|.")
    min_cosine: Optional[float] = Field(None, ge=-1, le=1, description="Smallest allowed cosine similarity to the reference.")
    min_snr_db: Optional[float] = Field(None, description="Smallest allowed signal-to-noise ratio in dB.")
    max_mse: Optional[float] = Field(None, ge=0, description="Largest allowed mean squared error against labels (regression).")
    max_mae: Optional[float] = Field(None, ge=0, description="Largest allowed mean absolute error against labels (regression).")

    def merged(self, override: Optional["Budget"]) -> "Budget":
        if override is None:
            return self
        values = self.model_dump()
        values.update(override.model_dump(exclude_unset=True))
        return Budget(**values)


class VerifySection(Budget):
    """Budgets for every export (per-export `verify:` overrides), and how evaluation runs."""

    max_top1_drop: Optional[float] = Field(0.01, ge=0, description=Budget.model_fields["max_top1_drop"].description)
    parity_samples: int = Field(16, ge=1, description="Samples for the check made right after each export.")
    batch_size: int = Field(32, ge=1, description="Batch size of evaluation.")
    limit: Optional[int] = Field(None, gt=0, description="Evaluate on at most this many samples.")
    enabled: bool = Field(True, description="Evaluate every artifact on the eval data.")
    primary_output: Optional[str] = Field(
        None, description="Models with several outputs: the output whose metrics head the report and that the labels "
        "belong to; default the first output by name. Every output is checked either way.")
    backend_limits: dict[Backend, Optional[int]] = Field(
        default_factory=dict, description="Evaluation samples per backend, overriding the backend's own cap (slow "
        "backends such as tfjs-cpu evaluate a subset by default; null removes the cap).")
    within_noise: Literal["point", "pass", "fail"] = Field(
        "point", description="A top-1 drop or agreement whose 95 % interval straddles its budget is within noise: "
        "'point' judges the measured value, 'pass' or 'fail' decide it either way (the report says which, and how "
        "many samples would decide it).")

    def budget(self) -> Budget:
        return Budget(**{k: getattr(self, k) for k in Budget.model_fields})


# ----------------------------------------------------------------------------- exports
class Quantize(Strict):
    """TF.js weight quantization: node-name globs per dtype; '*' is every weight."""

    uint8: list[str] = Field(default_factory=list, description="Weights stored as uint8 (affine).")
    uint16: list[str] = Field(default_factory=list, description="Weights stored as uint16 (affine).")
    float16: list[str] = Field(default_factory=list, description="Weights stored as float16.")
    range: Literal["minmax", "mse"] = Field(
        "minmax", description="The affine range of each uint8 and uint16 weight (TF.js stores a scale and minimum per "
        "weight): 'minmax', the weight's minimum and maximum, as tensorflowjs does; or 'mse', the clipped range that "
        "minimises the weight's mean squared round-trip error, so that one outlier does not coarsen every other value.")

    per_channel: list[str] = Field(
        default_factory=list, description="tfjs_graph: weight-name globs ('*': every one) of convolution and matmul "
        "kernels stored per output channel when they are uint8 or uint16. The kernel is stored scaled to [-1, 1] per "
        "channel and a float32 scale per channel multiplies the op's output (the fused op is split into the plain op, "
        "Mul, AddV2 and its activation): several times less error than one range per weight, where batch norms "
        "folded into the kernel give its channels different ranges. Costs 4 bytes per channel and the unfused ops.")
    bias_correction: bool = Field(
        False, description="tfjs_graph: take each quantized kernel's mean output shift out of its op's bias, measured "
        "on calibration data in TF.js (the mean of the op's input in the float model, convolved with the kernel's "
        "rounding error). Rounding errors that do not cancel over a channel's few inputs shift every output of the "
        "channel; corrected, they do not add up layer after layer. Free at run time; needs data.calibration.")
    calibration_samples: int = Field(200, ge=1, description="Calibration samples the bias correction averages over.")

    def short_name(self) -> str:
        used = [d for d in ("uint8", "uint16", "float16") if getattr(self, d)]
        if not used:
            return "none"
        suffix = "" if self.range == "minmax" or not ({"uint8", "uint16"} & set(used)) else f"+{self.range}"
        suffix += "+per-channel" if self.per_channel and {"uint8", "uint16"} & set(used) else ""
        suffix += "+bias-corrected" if self.bias_correction else ""
        if len(used) == 1 and getattr(self, used[0]) == ["*"]:
            return used[0] + suffix
        return "mixed(" + ",".join(f"{d}:{'|'.join(getattr(self, d))}" for d in used) + ")" + suffix


CALIBRATED = ("int8", "int16x8")  # quantization settings that need calibration data
SEARCHED_FORMATS = {"tfjs_graph": "tfjs-wasm", "tfjs_layers": "tfjs-wasm", "tflite": "tflite", "onnx": "onnxruntime"}  # -> default backend
TFJS_DTYPES = ("uint8", "uint16", "float16", "float32")


class TfjsSearchSpace(Strict):
    """What a TF.js search may choose: one dtype per weight."""

    dtypes: list[Literal[TFJS_DTYPES]] = Field(  # type: ignore[valid-type]
        list(TFJS_DTYPES), min_length=2,
        description="Weight dtypes from the most compressed to the widest: the search starts with every weight at the "
        "first and reverts the most sensitive weights to the next one that holds the budget.")
    ranking: Literal["error_per_byte", "quantization_error", "range"] = Field(
        "error_per_byte", description="Order in which weights are reverted, computed on the weights alone: "
        "'quantization_error' (RMS error of the weight stored at the first dtype, over its median magnitude), "
        "'error_per_byte' (that error squared per element: the most error removed per byte first) or 'range' "
        "(range over median magnitude: outliers first).")
    per_channel: bool = Field(
        False, description="tfjs_graph: store uint8 and uint16 convolution and matmul kernels per output channel "
        "(quantize.per_channel: ['*']): far less error at uint8 (measured on MobileNet v1: every weight uint8 loses "
        "10.6 top-1 points instead of 45.8), at the cost of model.json growing with the unfused ops; docs/benchmarks.md.")
    range: Literal["minmax", "mse"] = Field("minmax", description="The uint8/uint16 range of each weight (quantize.range).")
    bias_correction: bool = Field(
        False, description="tfjs_graph: correct every candidate's biases for its kernels' rounding "
        "(quantize.bias_correction; needs data.calibration). Measured on MobileNet v1 with per_channel: every kernel "
        "uint8 keeps 93 % top-1 agreement with the float model instead of 79 %; docs/benchmarks.md.")

    @field_validator("dtypes")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise PydanticCustomError("dtypes", "each dtype at most once", {})
        return value


class Search(Strict):
    """Find the smallest artifact of this export that holds a budget, instead of fixed quantization settings.

    Candidates are real artifacts scored in their own runtime on the search part of data.eval; the chosen one is
    then verified on the held-out part, which the search never saw, and that is the export's verdict."""

    objective: Literal["size", "gzip_size", "latency"] = Field(
        "size", description="What to minimise: artifact bytes, gzip bytes, or the p50 latency on `latency_backend` "
        "(1 thread, batch 1) of the candidates that hold the budget (TFLite and ONNX: TF.js dequantizes its weights at "
        "load, so their dtypes change the download, not the latency).")
    latency_backend: Optional[Backend] = Field(None, description="Backend the latency objective is measured on; "
                                               "default the backend that scores the candidates.")
    budget: Budget = Field(default_factory=lambda: Budget(max_top1_drop=0.01),
                           description="What every candidate must hold on the search part, and the chosen one on the "
                           "held-out part; default {max_top1_drop: 0.01}, applied on top of verify and the export's verify:.")
    max_trials: int = Field(20, ge=1, le=1000, description="Candidates evaluated at most (cached ones count too).")
    max_seconds: Optional[float] = Field(None, gt=0, description="No new candidate is started after this many seconds of "
                                         "searching; the best candidate within the budget so far is kept.")
    holdout: float = Field(0.5, gt=0, lt=1, description="Share of data.eval held out: never seen by the search, used for the verdict.")
    seed: int = Field(0, description="Seed of the search/held-out split.")
    within_noise: Literal["fail", "point"] = Field(
        "fail", description="A candidate whose drop or agreement is within noise of the budget on the search part "
        "(its 95 % interval straddles it): 'fail' rejects it (the search picks the best of many candidates, so one "
        "that passes by luck would fail on the held-out part), 'point' judges the measured value.")
    backend: Optional[Backend] = Field(None, description="Backend that scores the candidates; default tfjs-wasm for TF.js, "
                                       "tflite for TFLite, onnxruntime for ONNX.")
    space: TfjsSearchSpace = Field(default_factory=TfjsSearchSpace, description="The choices per weight (TF.js; a TFLite "
                                   "or ONNX search has no choices to set: int8, or float for the nodes it keeps float).")

    @model_validator(mode="after")
    def _searched_objective(self) -> "Search":
        if self.latency_backend is not None and self.objective != "latency":
            raise PydanticCustomError("search", "latency_backend is for objective: latency (the objective is '{o}')",
                                      {"o": self.objective})
        if not self.budget.model_fields_set:
            raise PydanticCustomError("search", "budget: give at least one entry, e.g. {max_top1_drop: 0.01}", {})
        return self


class ExportBase(Strict):
    name: str = Field(..., description="Artifact name: the folder under artifacts/.")
    model: Optional[str] = Field(None, description="Pipeline stage whose model is exported; default the end of the main line.")
    verify: Optional[Budget] = Field(None, description="Budget overrides for this export.")
    backends: Optional[list[Backend]] = Field(None, description="Backends to evaluate and time on; default every one that can run the format.")
    search: Optional[Search] = Field(None, description="Search the smallest quantization within a budget instead of fixed "
                                     f"settings ({', '.join(SEARCHED_FORMATS)} so far; TFLite and ONNX: int8 with the "
                                     "fewest nodes kept float).")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _name(value)

    def needs_calibration(self) -> bool:
        """Whether building the artifact reads calibration data: full-integer quantization (TFLite, ONNX) or a TF.js
        bias correction, fixed or searched."""
        if getattr(self, "quantization", "none") in CALIBRATED:
            return True
        quantize = getattr(self, "quantize", None)
        searched = self.search is not None and getattr(self, "format", "") == "tfjs_graph" and self.search.space.bias_correction
        return bool(quantize is not None and quantize.bias_correction) or searched

    @model_validator(mode="after")
    def _search_fits(self) -> "ExportBase":
        if self.search is None:
            return self
        fmt = getattr(self, "format", None)
        if fmt not in SEARCHED_FORMATS:
            raise problems("ExportBase", [(("search",), "search", "only {f} exports are searched so far, not '{fmt}'",
                                           {"f": ", ".join(SEARCHED_FORMATS), "fmt": fmt})])
        if getattr(self, "quantize", None) is not None:
            raise problems("ExportBase", [(("quantize",), "search", "give either 'quantize' or 'search', not both", {})])
        if fmt == "tflite":
            if getattr(self, "quantization", None) != "int8":
                raise problems("ExportBase", [(("quantization",), "search", "a TFLite search keeps nodes float in a "
                                               "full-integer model: set quantization: int8, not '{q}'",
                                               {"q": getattr(self, "quantization", None)})])
            for key in ("keep_float_nodes", "keep_float_ops"):
                if getattr(self, key, None):
                    raise problems("ExportBase", [((key,), "search", "give either '{key}' or 'search', not both: the "
                                                   "search chooses the nodes kept float", {"key": key})])
            if "space" in self.search.model_fields_set:
                raise problems("ExportBase", [(("search", "space"), "search", "space is TF.js's (weight dtypes): a "
                                               "TFLite search chooses between int8 and float per node, with no setting",
                                               {})])
        if fmt == "onnx":
            if getattr(self, "quantization", None) != "int8":
                raise problems("ExportBase", [(("quantization",), "search", "an ONNX search keeps nodes float in a "
                                               "static QDQ model: set quantization: int8, not '{q}'",
                                               {"q": getattr(self, "quantization", None)})])
            if getattr(self, "exclude_nodes", None):
                raise problems("ExportBase", [(("exclude_nodes",), "search", "give either 'exclude_nodes' or 'search', "
                                               "not both: the search chooses the nodes kept float", {})])
            if "space" in self.search.model_fields_set:
                raise problems("ExportBase", [(("search", "space"), "search", "space is TF.js's (weight dtypes): an "
                                               "ONNX search chooses between int8 and float per node, with no setting",
                                               {})])
        if self.search.objective == "latency" and fmt not in ("tflite", "onnx"):
            raise problems("ExportBase", [(("search", "objective"), "search", "a {fmt} search cannot minimise latency: "
                                           "TF.js dequantizes every weight to float32 at load, so the dtypes change the "
                                           "download size, not the inference time; use size or gzip_size", {"fmt": fmt})])
        if self.search.latency_backend is not None and fmt not in BACKENDS[self.search.latency_backend].formats:
            raise problems("ExportBase", [(("search", "latency_backend"), "search", "backend '{b}' cannot run a {fmt} "
                                           "model", {"b": self.search.latency_backend, "fmt": fmt})])
        if self.search.backend is not None and fmt not in BACKENDS[self.search.backend].formats:
            raise problems("ExportBase", [(("search", "backend"), "search", "backend '{b}' cannot run a {fmt} model",
                                           {"b": self.search.backend, "fmt": fmt})])
        return self

    def searched_budget(self) -> Optional[Budget]:
        """This export's `verify:` with the search budget on top (what the held-out verdict applies)."""
        if self.search is None:
            return self.verify
        values = self.verify.model_dump(exclude_unset=True) if self.verify else {}
        values.update(self.search.budget.model_dump(exclude_unset=True))
        return Budget(**values)

    def quantization_name(self) -> str:
        return "none"


class SavedModelExport(ExportBase):
    """The float model after the pipeline, as a SavedModel (the reference)."""

    format: Literal["savedmodel"]


class TFLiteExport(ExportBase):
    """TFLite through TFLiteConverter."""

    format: Literal["tflite"]
    quantization: Literal["none", "float16", "dynamic_int8", "int8", "int16x8"] = Field("none", description="Post-training quantization.")
    input_type: Literal["float32", "int8", "uint8"] = Field("float32", description="Input tensor type (full-integer int8 only).")
    output_type: Literal["float32", "int8", "uint8"] = Field("float32", description="Output tensor type (full-integer int8 only).")
    per_channel: bool = Field(True, description="Per-channel weight quantization.")
    calibration_samples: int = Field(100, ge=1, description="Representative samples drawn from the calibration data.")
    keep_float_ops: list[str] = Field(default_factory=list, description="Op types left in float (quantization debugger deny-list).")
    keep_float_nodes: list[str] = Field(default_factory=list, description="Node names left in float (quantization debugger deny-list).")
    select_tf_ops: bool = Field(False, description="Allow TensorFlow ops (SELECT_TF_OPS) for ops TFLite lacks.")
    custom_ops: bool = Field(False, description="Allow custom ops.")
    signature: str = Field("serving_default", description="SavedModel signature to convert.")

    @model_validator(mode="after")
    def _io_types(self) -> "TFLiteExport":
        found = []
        if self.quantization != "int8":
            for key in ("input_type", "output_type"):
                if getattr(self, key) != "float32":
                    found.append(((key,), "impossible", "{key} {t} needs quantization 'int8', not '{q}'",
                                  {"key": key, "t": getattr(self, key), "q": self.quantization}))
            for key in ("keep_float_ops", "keep_float_nodes"):
                if getattr(self, key):
                    found.append(((key,), "impossible", "{key} needs quantization 'int8', not '{q}'",
                                  {"key": key, "q": self.quantization}))
        if found:
            raise problems("TFLiteExport", found)
        return self

    def quantization_name(self) -> str:
        return self.quantization


class OnnxExport(ExportBase):
    """ONNX through tf2onnx; quantized with onnxruntime.quantization."""

    format: Literal["onnx"]
    opset: int = Field(17, ge=9, le=18, description="ONNX opset (tf2onnx 1.17 goes up to 18).")
    input_names: Optional[list[str]] = Field(None, description="Rename the graph inputs.")
    output_names: Optional[list[str]] = Field(None, description="Rename the graph outputs.")
    dynamic_batch: bool = Field(True, description="Leave the batch dimension dynamic.")
    layout: Literal["nhwc", "nchw"] = Field("nhwc", description="Image input layout; 'nchw' transposes the inputs.")
    external_data: Literal["auto", "always", "never"] = Field("auto", description="Weights in a separate file; 'auto' above 2 GB.")
    quantization: Literal["none", "dynamic_int8", "int8"] = Field("none", description="'int8' is static QDQ with calibration.")
    calibration_method: Literal["minmax", "entropy", "percentile"] = Field("minmax", description="Static QDQ calibration method.")
    calibration_samples: int = Field(100, ge=1, description="Calibration samples.")
    per_channel: bool = Field(True, description="Per-channel weight quantization.")
    preprocess: bool = Field(True, description="Run onnxruntime's quant_pre_process first.")
    exclude_nodes: list[str] = Field(default_factory=list, description="Node names left in float.")
    exclude_op_types: list[str] = Field(default_factory=list, description="Op types left in float.")

    def quantization_name(self) -> str:
        return self.quantization


class TfjsGraphExport(ExportBase):
    """TF.js graph model through the tensorflowjs converter's Python API."""

    format: Literal["tfjs_graph"]
    shard_size: ByteSize = Field(4 * 1024 * 1024, description="Weight shard size in bytes or text such as '4MB'.")
    split_weights_by_layer: bool = Field(False, description="Start a new shard at every layer.")
    control_flow_v2: bool = Field(True, description="Emit control-flow v2 ops.")
    strip_debug_ops: bool = Field(True, description="Remove Print/Assert/CheckNumerics ops.")
    quantize: Optional[Quantize] = Field(None, description="Weight quantization by node glob.")

    def quantization_name(self) -> str:
        if self.search is not None:
            return "search"
        return self.quantize.short_name() if self.quantize else "none"


class TfjsLayersExport(ExportBase):
    """TF.js layers model from the tf_keras model."""

    format: Literal["tfjs_layers"]
    shard_size: ByteSize = Field(4 * 1024 * 1024, description="Weight shard size in bytes or text such as '4MB'.")
    quantize: Optional[Quantize] = Field(None, description="Weight quantization by weight-name glob.")

    @model_validator(mode="after")
    def _graph_only(self) -> "TfjsLayersExport":
        if self.quantize is not None and self.quantize.per_channel:
            raise problems("TfjsLayersExport", [(("quantize", "per_channel"), "per_channel",
                                                 "per-channel kernels multiply the op's output by a scale, which a "
                                                 "layers model has no node for: use format: tfjs_graph", {})])
        if self.quantize is not None and self.quantize.bias_correction:
            raise problems("TfjsLayersExport", [(("quantize", "bias_correction"), "bias_correction",
                                                 "bias correction reads the graph's ops and their biases: use "
                                                 "format: tfjs_graph", {})])
        if self.search is not None and self.search.space.bias_correction:
            raise problems("TfjsLayersExport", [(("search", "space", "bias_correction"), "bias_correction",
                                                 "bias correction needs a graph model: set bias_correction: false, "
                                                 "or use format: tfjs_graph", {})])
        if self.search is not None and self.search.space.per_channel:
            raise problems("TfjsLayersExport", [(("search", "space", "per_channel"), "per_channel",
                                                 "per-channel kernels need a graph model: set per_channel: false, or "
                                                 "use format: tfjs_graph", {})])
        return self

    def quantization_name(self) -> str:
        if self.search is not None:
            return "search"
        return self.quantize.short_name() if self.quantize else "none"


Export = Annotated[
    Union[SavedModelExport, TFLiteExport, OnnxExport, TfjsGraphExport, TfjsLayersExport],
    Field(discriminator="format"),
]
FORMATS = ("savedmodel", "tflite", "onnx", "tfjs_graph", "tfjs_layers")


# ----------------------------------------------------------------------------- benchmark
class BenchmarkSection(Strict):
    """Latency measurement schedule."""

    enabled: bool = Field(True, description="Time every artifact on every backend.")
    threads: Optional[list[int]] = Field(None, description="Thread counts; default [1, all cores].")
    batch_sizes: list[int] = Field([1], description="Batch sizes to time.")
    warmup_runs: int = Field(10, ge=0, description="Warm-up runs, at least.")
    warmup_seconds: float = Field(1.0, ge=0, description="Warm-up seconds, at least.")
    min_runs: int = Field(50, ge=1, description="Timed runs, at least.")
    min_seconds: float = Field(2.0, ge=0, description="Timed seconds, at least.")
    max_runs: int = Field(100000, ge=1, description="Stop after this many timed runs (once min_seconds is reached, unless max_seconds comes first).")
    max_seconds: float = Field(20.0, gt=0, description="Stop after this many timed seconds (once min_runs is reached).")
    backends: Optional[list[Backend]] = Field(None, description="Restrict timing to these backends.")


# ----------------------------------------------------------------------------- recipe
class Recipe(Strict):
    """A conversion recipe."""

    name: str = Field(..., description="Run name; the default output folder is runs/<name>.")
    model: ModelSpec = Field(..., description="The source model.")
    data: DataSection = Field(default_factory=DataSection, description="Datasets by role.")
    pipeline: list[Stage] = Field(default_factory=list, description="Ordered transforms: train, prune, qat.")
    exports: list[Export] = Field(..., min_length=1, description="Named artifacts to produce.")
    verify: VerifySection = Field(default_factory=VerifySection, description="Verification budgets and settings.")
    benchmark: BenchmarkSection = Field(default_factory=BenchmarkSection, description="Latency measurement.")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _name(value)

    @model_validator(mode="after")
    def _references(self) -> "Recipe":
        """Stage and export names and references, all at once."""
        found: list[tuple[tuple[str | int, ...], str, str, dict[str, Any]]] = []

        def problem(loc: tuple[str | int, ...], template: str, **ctx: Any) -> None:
            found.append((loc, "recipe", template, ctx))

        seen: set[str] = {"source"}
        for index, stage in enumerate(self.pipeline):
            if stage.stage_name in seen:
                problem(("pipeline", index, "name"), "duplicate stage name {n}: give each stage its own 'name'",
                        n=shown(stage.stage_name))
            if stage.input is not None and stage.input not in seen:
                problem(("pipeline", index, "input"), "no earlier stage named {n}{hint}", n=shown(stage.input),
                        hint=did_you_mean(stage.input, seen))
            if self.data.train is None:
                problem(("pipeline", index, "stage"), "stage '{s}' needs data.train", s=stage.stage)
            seen.add(stage.stage_name)
        names: set[str] = set()
        for index, export in enumerate(self.exports):
            if export.name in names:
                problem(("exports", index, "name"), "duplicate export name {n}", n=shown(export.name))
            names.add(export.name)
            if export.model is not None and export.model not in seen:
                problem(("exports", index, "model"), "no pipeline stage named {n}{hint}", n=shown(export.model),
                        hint=did_you_mean(export.model, seen))
            if export.search is not None and self.data.eval is None:
                problem(("exports", index, "search"), "search needs data.eval: its samples are split into the part "
                        "the search scores candidates on and the held-out part the verdict uses")
            if export.needs_calibration() and self.data.for_calibration() is None:
                if getattr(export, "quantization", "none") in CALIBRATED:
                    problem(("exports", index, "quantization"),
                            "quantization '{q}' needs calibration data: add data.calibration", q=getattr(export, "quantization"))
                else:
                    where = ("quantize", "bias_correction") if getattr(export, "quantize", None) else ("search", "space", "bias_correction")
                    problem(("exports", index, *where), "bias correction needs calibration data: add data.calibration")
        if found:
            raise problems("Recipe", found)
        return self

    # -- lineage helpers (no TensorFlow) --
    def main_line(self) -> str:
        """Name of the model at the end of the main line (stages without an explicit input)."""
        last = "source"
        for stage in self.pipeline:
            if stage.input is None:
                last = stage.stage_name
        return last

    def stage_input(self, index: int) -> str:
        stage = self.pipeline[index]
        if stage.input is not None:
            return stage.input
        for earlier in reversed(self.pipeline[:index]):
            if earlier.input is None:
                return earlier.stage_name
        return "source"

    def export_model(self, export: ExportBase) -> str:
        return export.model or self.main_line()
