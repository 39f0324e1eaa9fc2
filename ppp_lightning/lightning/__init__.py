"""The Lightning shell: the LightningModule, the ``ppp-lightning`` command and logging, one concern per module.

- :mod:`~ppp_lightning.lightning.classifier`: ``ImageClassifier``, the LightningModule of every model family.
- :mod:`~ppp_lightning.lightning.cli`: the ``LightningCLI`` entry point; :mod:`~ppp_lightning.lightning.commands`:
  ``PPPTrainer`` with the ``audit`` and ``calibrate`` subcommands.
- :mod:`~ppp_lightning.lightning.logger_sinks`: report sinks for W&B, TensorBoard and any logger's scalars.
- :mod:`~ppp_lightning.lightning.wandb_policy`: W&B offline unless logged in; finishing a failed run.
- :mod:`~ppp_lightning.lightning.checkpoint_hparams`: a checkpoint's hyperparameters against the config's.
- :mod:`~ppp_lightning.lightning.run_footprint`: undoing what a run that failed in setup wrote.
- :mod:`~ppp_lightning.lightning.errors`: one line per failure instead of the parser's wrapped traceback.
"""

# Nothing is imported here: the federated server needs only the W&B policy, not the whole shell.
__all__: list[str] = []
