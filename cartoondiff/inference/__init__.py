"""Load and draw a trained model: checkpoint I/O, one ``generate`` path, sample grids.

Nothing here imports the training or evaluation code, so sampling a checkpoint loads only
the model, the diffusion process and these modules.
"""

from cartoondiff.inference.generate import generate
from cartoondiff.inference.trained import TrainedModel, load_trained

__all__ = ["TrainedModel", "generate", "load_trained"]
