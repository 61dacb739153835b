"""Training side: axolotl config loading, preflight lint, GPU memory estimate, the train
wrapper, the training log, and the verified Qiskit dataset generator."""
