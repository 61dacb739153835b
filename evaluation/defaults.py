"""Scoring defaults (docs/evaluation.md), qiskit-free so the CLI can use them without loading qiskit."""

BP_VARIANCE_THRESHOLD = 1e-3  # plateau iff the mean gradient variance is below this
BP_NUM_SAMPLES = 30           # parameter vectors drawn for the barren-plateau check
MAX_DEPTH = 50                # verification: circuit depth limit

# Barren-plateau verdict (docs/evaluation.md, "Barren-plateau check"). `scaling` is the default rule;
# `absolute` is the seed's (plateau iff bp_variance < BP_VARIANCE_THRESHOLD), kept for older logs.
BP_RULES = ("scaling", "absolute")
BP_RULE = "scaling"
BP_FLAT_RATIO = 0.01           # flat: variance < 1/100 of the 2-design's (a Haar circuit ~7 qubits larger)
BP_RATIO_CUTOFF = 2.0          # plateau iff variance <= 2x the 2-design's, at a size where that is decidable
BP_RATIO_MIN_QUBITS = 8        # the ratio decides only from 8 qubits (below, shallow and Haar overlap)
BP_DECAY_FRACTION = 0.5        # plateau iff the fitted decay per qubit >= half the 2-design's
BP_SCALING_STEPS = (2, 4)      # rebuilt at n+2, n+4 and 8 (n < 8); above 8 only n+2 (bp_scaling.scaled_sizes) ...
BP_SCALING_MAX_QUBITS = 10     # ... never above 10 qubits (a 12-qubit check costs 0.2-0.8 s of CPU)
BP_FIT_MIN_QUBITS = 6          # the decay is fitted on sizes >= 6 (at 2-4 qubits small-size effects dominate it)
BP_SCALING_TIME_S = 4.0        # wall-clock budget for the rebuilds in the reply process (all sizes)
BP_SCALING_SKIP_AFTER_S = 10.0  # no rebuild when the reply's own run already used this much CPU
BP_SCALING_MARGIN_S = 1.0      # and none closer than this to the reply's timeout
BP_BOOTSTRAP = 400             # bootstrap resamples of the samples, for the decay's and the ratio's interval
BP_CONFIDENCE = 0.95           # undecided when this central interval of the verdict's statistic straddles its cut
# Samples per size for the `scaling` verdict (bootstrap and fit): (up to this many qubits, first, most). While
# the interval straddles its cut the samples double at every size, up to `most` (bp_scaling.measured_verdict).
# A size above the last gets BP_NUM_SAMPLES; rule `absolute` always uses BP_NUM_SAMPLES (the seed's 30).
BP_VERDICT_SAMPLES = ((8, 60, 1920), (10, 30, 240))
