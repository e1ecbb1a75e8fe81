"""charrnn: character-level recurrent language models (LSTM, GRU, tanh RNN) that train on a CPU.

The Python API is `charrnn.load` (a trained model that samples, streams and scores) and `charrnn.train`.
"""

from charrnn.api import Model, load, train
from charrnn.errors import CharRNNError

__version__ = "0.1.0"
__all__ = ["CharRNNError", "Model", "__version__", "load", "train"]
