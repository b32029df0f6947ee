"""Training, in one import: the rooms it gathers, each in its own module.

* ``nrlib.fitting`` — the loop: ``fit(model, x, y, objective=...)``, ``make_optimizer``,
  ``crop_flip``;
* ``nrlib.objectives`` — what ``fit`` minimises: ``Objective`` (cross-entropy on clean and/or
  adversarial images) and its terms (``LogitPairing``, ``SensitivityPenalty``, ``SNSPenalty``);
* ``nrlib.sns`` — Sensitive Neuron Stabilizing fine-tuning (Zhang et al. 2021, Algorithm 1);
* ``nrlib.checkpoints`` — atomic, checksummed checkpoints loaded with ``weights_only=True``;
* ``nrlib.recipes`` — how each model trains (``RECIPES``), with its measured evidence;
* ``nrlib.zoo`` — ``zoo_get``: the cached models, trained on first use.

``python -m nrlib.train [--recipe cifar] [--profile auto|smoke|cpu|full] …`` trains (or loads) a
recipe's models and records their test accuracy (``nrlib.zoo.main``).
"""
from __future__ import annotations

from .checkpoints import CheckpointMismatchError, CorruptCheckpointError, load_checkpoint, save_checkpoint
from .fitting import OPTIMIZERS, SCHEDULES, crop_flip, fit, make_optimizer, pixels
from .objectives import MIXES, LogitPairing, Objective, SensitivityPenalty, SNSPenalty, Term
from .recipes import (AUGMENTS, PENALTIES, RECIPES, STANDARD, model_kwargs, recipe_datasets, recipe_settings,
                      recipe_variants, snapshot_epochs, train_val_data, variant_objective)
from .sns import SNS_MODES, sns_finetune, sns_trainable
from .zoo import FINETUNES, checkpoint_dir, main, record_zoo, zoo_entry, zoo_get, zoo_key

__all__ = ["CheckpointMismatchError", "CorruptCheckpointError", "load_checkpoint", "save_checkpoint",
           "OPTIMIZERS", "SCHEDULES", "crop_flip", "fit", "make_optimizer", "pixels",
           "MIXES", "LogitPairing", "Objective", "SensitivityPenalty", "SNSPenalty", "Term",
           "AUGMENTS", "PENALTIES", "RECIPES", "STANDARD", "model_kwargs", "recipe_datasets", "recipe_settings",
           "recipe_variants", "snapshot_epochs", "train_val_data", "variant_objective",
           "SNS_MODES", "sns_finetune", "sns_trainable",
           "FINETUNES", "checkpoint_dir", "main", "record_zoo", "zoo_entry", "zoo_get", "zoo_key"]

if __name__ == "__main__":
    raise SystemExit(main())
