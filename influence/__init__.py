"""Multi-stage influence functions (Chen et al., 2020): trace a finetuned model's test loss
back to its pretraining data.

>>> from influence import MultiStage, Exact, CG, Identity
"""

from .multistage import MultiStage
from .solvers import CG, Exact, Identity

__all__ = ["MultiStage", "Exact", "CG", "Identity"]
__version__ = "0.1.0"
