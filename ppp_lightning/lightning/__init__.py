"""The Lightning shell of the ``ppp-lightning`` command, one concern per module.

- :mod:`~ppp_lightning.lightning.wandb_policy`: W&B offline unless logged in; finishing a failed run.
- :mod:`~ppp_lightning.lightning.checkpoint_hparams`: a checkpoint's hyperparameters against the config's.
- :mod:`~ppp_lightning.lightning.run_footprint`: undoing what a run that failed in setup wrote.
- :mod:`~ppp_lightning.lightning.errors`: one line per failure instead of the parser's wrapped traceback.

The CLI class itself is :class:`ppp_lightning.lightning.cli.PPPLightningCLI`.
"""

# Nothing is imported here: the federated server needs only the W&B policy, not the whole shell.
__all__: list[str] = []
