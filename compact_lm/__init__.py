"""compact-lm: tiny character-level language models, trained in NumPy, compressed, run on device.

The runtime part of this package (models, backends, autocomplete) imports only numpy, and
onnxruntime when given an .onnx file; training adds nothing heavier. `compact_lm.export` (ONNX
builders, needs onnx) and `compact_lm.tools` (pruning, quantization, profiling) are separate.

    model = compact_lm.open_model("model.npz")     # float or int8 .npz, or an exported .onnx
    model.evaluate(text).bpc; model.backend(); compact_lm.Autocompleter(model)
"""
from .autocomplete import Autocompleter, Suggestion
from .backends import Backend, NumpyBackend
from .config import ModelConfig, TrainConfig
from .errors import CompactLMError
from .metrics import Metrics
from .model import Model
from .opener import open_model
from .vocab import Vocab

__version__ = "0.1.0"
load = open_model   # the name earlier versions used


def train(config: TrainConfig, out_dir, *, resume: bool = False, progress: bool = False):
    """Train a model as `config` says into out_dir (model.npz, state.npz, history); returns a TrainResult."""
    from .trainer import Trainer
    return Trainer(config, out_dir, resume=resume, progress=progress).run()


__all__ = ["Autocompleter", "Backend", "CompactLMError", "Suggestion", "Metrics", "Model", "ModelConfig",
           "NumpyBackend", "TrainConfig", "Vocab", "load", "open_model", "train", "__version__"]
