"""The public names of ``caloquant.train``: read by type checkers and by
``lazy_loader.attach_stub`` in ``__init__.py`` (the one list of them)."""

from .config import TrainConfig as TrainConfig
from .ddp import Dist as Dist
from .recipes import RECIPES as RECIPES, Recipe as Recipe, get_recipe as get_recipe
from .run import TrainResult as TrainResult, load_run_state as load_run_state, train as train
from .trainer import Trainer as Trainer
