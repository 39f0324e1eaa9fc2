"""Defenses: PRECODE, which parameters a defense perturbs, and how (``DefenseSpec``)."""
