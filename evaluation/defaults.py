"""Scoring defaults (docs/evaluation.md), qiskit-free so the CLI can use them without loading qiskit."""

BP_VARIANCE_THRESHOLD = 1e-3  # plateau iff the mean gradient variance is below this
BP_NUM_SAMPLES = 30           # parameter vectors drawn for the barren-plateau check
MAX_DEPTH = 50                # verification: circuit depth limit
