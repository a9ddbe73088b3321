"""``fastnst train``: a style image (or several) and a folder of photos → a style model file.

* ``config.TrainConfig`` — every option, validated once and saved whole in the model file;
* ``loop.fit`` — the training loop, read top to bottom;
* ``data`` — photo folders, the dataset, epoch-shuffled shards;
* ``styles`` — several styles in one network, adding styles to a trained one;
* ``distributed`` — torchrun/DDP set-up and Ctrl-C handling;
* ``monitor`` — progress bar, log lines, TensorBoard;
* ``rng`` — seeding and RNG state for exact resumes.
"""

from fastnst.train.config import TrainConfig
from fastnst.train.loop import TrainingDiverged, TrainingInterrupted, checkpoint_path, fit

__all__ = ["TrainConfig", "TrainingDiverged", "TrainingInterrupted", "checkpoint_path", "fit"]
