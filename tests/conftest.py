"""Shared test set-up.

Tests run single-threaded: the models in the tests are tiny, where one thread is fastest, and
OpenMP's spin-waiting makes two threads 10x slower when the machine's other core is busy.
"""

import matplotlib
import torch

matplotlib.use("Agg")
torch.set_num_threads(1)
