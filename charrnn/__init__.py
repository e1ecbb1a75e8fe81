"""charrnn: character-level recurrent language models (LSTM, GRU, tanh RNN) that train on a CPU."""

__version__ = "0.1.0"
