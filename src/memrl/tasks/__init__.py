"""Tasks: datasets with prompts and answer checkers (math word problems, procedural arithmetic).

Submodules are imported on use; this package stays light so ``memrl --help`` is instant.
"""

from memrl.tasks.arith import generate_problems
from memrl.tasks.math import (
    DATASETS,
    STYLES,
    DatasetSpec,
    MathDataset,
    dataset_names,
    load_rows,
    make_messages,
    to_training_rows,
)

__all__ = ["DATASETS", "STYLES", "DatasetSpec", "MathDataset", "dataset_names", "generate_problems", "load_rows",
           "make_messages", "to_training_rows"]
