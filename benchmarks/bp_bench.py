"""Barren-plateau check cost: our adjoint simulator vs naive qiskit parameter shift, same samples.

    .venv/bin/python benchmarks/bp_bench.py [--qubits 8] [--reps 2] [--samples 30] [--table-qubits 4,6,8,10]

efficient_su2(n, reps) on the Heisenberg chain, full gradient at every sample. The baseline is
qiskit's StatevectorEstimator with the parameter-shift rule (2 circuits per parameter per sample,
all in one PUB). Prints both times, the speed-up (goal >= 300x) and the largest variance difference.

Then the verdict table (docs/evaluation.md): bp_variance / 2-design variance (`bp_ratio`) of shallow
and deep ansatze at each size of --table-qubits, the reference itself, and the CPU time of one check.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from qiskit.circuit.library import efficient_su2
from qiskit.primitives import StatevectorEstimator

from evaluation.barren import gradient_variances, sample_parameters
from evaluation.hamiltonians import build_operator, sparse_matrix


def naive_variances(qc, op, samples: np.ndarray) -> np.ndarray:
    """The straightforward loop (as measured in docs/notes: ~36 s here): one estimator call per
    parameter per sample, evaluating the +pi/2 and -pi/2 shifted points."""
    est = StatevectorEstimator()
    P = samples.shape[1]
    grads = np.zeros_like(samples)
    for s_i, s in enumerate(samples):
        for k in range(P):
            e = np.zeros(P)
            e[k] = np.pi / 2
            ev = est.run([(qc, op, np.stack([s + e, s - e]))]).result()[0].data.evs
            grads[s_i, k] = 0.5 * (ev[0] - ev[1])
    return grads.var(axis=0)


def batched_variances(qc, op, samples: np.ndarray) -> np.ndarray:
    """A stronger qiskit baseline: every shifted point of every sample in ONE estimator PUB."""
    P = samples.shape[1]
    shifts = np.eye(P) * (np.pi / 2)
    points = np.concatenate([np.stack([s + shifts, s - shifts]).reshape(2 * P, P) for s in samples])
    values = StatevectorEstimator().run([(qc, op, points)]).result()[0].data.evs.reshape(len(samples), 2, P)
    grads = 0.5 * (values[:, 0] - values[:, 1])
    return grads.var(axis=0)


def _hva_heisenberg(n: int, layers: int = 2):
    """Singlets on even bonds, then XX+YY+ZZ layers on odd then even bonds, one angle per layer and group."""
    from qiskit import QuantumCircuit
    from qiskit.circuit import ParameterVector

    th = ParameterVector("t", 2 * layers)
    qc = QuantumCircuit(n)
    for q in range(0, n - 1, 2):
        qc.h(q)
        qc.cx(q, q + 1)
        qc.x(q + 1)
        qc.z(q)
    for layer in range(layers):
        for j, start in enumerate((1, 0)):
            for q in range(start, n - 1, 2):
                for gate in (qc.rxx, qc.ryy, qc.rzz):
                    gate(th[2 * layer + j], q, q + 1)
    return qc


def verdict_table(sizes: list[int], samples: int) -> None:
    from evaluation.barren import bp_verdict, detect_barren_plateau, haar_gradient_variance
    from evaluation.verify import circuit_depth, flatten

    families = [(f"efficient_su2 linear reps={r}", lambda n, r=r: efficient_su2(n, reps=r, entanglement="linear"))
                for r in (1, 2, 3, 5, 9)] + [("HVA (shared angles, 2 layers)", _hva_heisenberg)]
    print(f"\nHeisenberg chain, {samples} samples: bp_ratio = bp_variance / 2-design variance (depth), CPU ms")
    print(f"  {'2-design variance':<32}" + "".join(f"{f'n={n}':>22}" for n in sizes) + "   decay / 2-design's")
    print(f"  {'':<32}" + "".join(f"{haar_gradient_variance('heisenberg', n):>22.5f}" for n in sizes))
    for name, build in families:
        cells, var = [], {}
        for n in sizes:
            flat = flatten(build(n))
            t0 = time.process_time()
            bp = detect_barren_plateau(flat, sparse_matrix("heisenberg", n), num_samples=samples)
            ms = (time.process_time() - t0) * 1e3
            var[n] = bp.bp_variance
            cells.append(f"{bp.bp_variance / haar_gradient_variance('heisenberg', n):.2f} (d{circuit_depth(flat)}) {ms:.0f}ms")
        v = bp_verdict("heisenberg", sizes[0], var[sizes[0]], {n: var[n] for n in sizes[1:]})
        fit = f"   {v.decay:.2f} / {v.decay_reference:.2f}" if v.decay is not None else ""
        print(f"  {name:<32}" + "".join(f"{c:>22}" for c in cells) + fit)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qubits", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=5, help="timed repetitions of our check (best is reported)")
    ap.add_argument("--table-qubits", default="4,6,8,10", help="sizes of the verdict table ('' to skip)")
    args = ap.parse_args()
    qc = efficient_su2(args.qubits, reps=args.reps)
    op = build_operator("heisenberg", args.qubits)
    hmat = sparse_matrix("heisenberg", args.qubits)
    samples = sample_parameters(qc.num_parameters, args.samples, seed=0)
    ours_t = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        ours = gradient_variances(qc, hmat, samples)
        ours_t.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    ref_b = batched_variances(qc, op, samples)
    batched_t = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = naive_variances(qc, op, samples)
    naive_t = time.perf_counter() - t0
    best = min(ours_t)
    print(f"efficient_su2({args.qubits}, reps={args.reps}): {qc.num_parameters} parameters, Heisenberg, "
          f"{args.samples} samples, full gradient")
    print(f"  naive qiskit StatevectorEstimator parameter shift: {naive_t:8.3f} s  (one run() per parameter per sample)")
    print(f"  batched qiskit StatevectorEstimator (one PUB):     {batched_t:8.3f} s")
    print(f"  evaluation.barren (adjoint, batched):             {best:8.4f} s  (best of {args.repeat}, "
          f"compile + simulate)")
    print(f"  speed-up vs naive: {naive_t / best:.0f}x  (goal >= 300x);  vs batched PUB: {batched_t / best:.0f}x")
    print(f"  max |variance difference|: {max(np.max(np.abs(ours - ref)), np.max(np.abs(ours - ref_b))):.2e}  "
          f"mean variance {ours.mean():.4f}")
    if args.table_qubits:
        verdict_table([int(x) for x in args.table_qubits.split(",")], args.samples)


if __name__ == "__main__":
    main()
