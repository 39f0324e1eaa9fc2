"""Auditing: an attack suite on fixed victims with controls, and the noise calibrator."""
