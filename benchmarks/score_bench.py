"""Scoring throughput: 100 saved valid replies at 4/6/8 qubits (sandbox + verification + BP check).

    .venv/bin/python benchmarks/score_bench.py [--num 100] [--workers 2] [--baseline-sample 10] [--rounds 1]

Goal: <= 15 s wall on 2 cores with the default BP rule (`scaling`: every reply here is rebuilt and measured at
6 and 8 qubits (n=4), 8 (n=6) or 10 (n=8) too). The seed's rule (`absolute`, no rebuild) is timed
in the same run, alternating with it --rounds times, so the two figures share the machine's load.
Baseline measured in the same run: a fresh Python interpreter per reply (what a
bwrap/subprocess-per-reply design pays: a qiskit import each), timed on a sample of replies and
extrapolated to --num.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from evaluation.prompts import build_prompts
from evaluation.scoring import score_replies

STYLES = [
    """```python
from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
n = {n}
theta = ParameterVector("theta", 2 * n)
qc = QuantumCircuit(n)
for i in range(n):
    qc.ry(theta[i], i)
for i in range(n - 1):
    qc.cx(i, i + 1)
for i in range(n):
    qc.ry(theta[n + i], i)
qc.measure_all()
```""",
    """Here is a hardware-efficient ansatz:
```python
from qiskit.circuit.library import efficient_su2
ansatz = efficient_su2({n}, reps=2, entanglement="linear")
print(ansatz.num_parameters)
```""",
    """```python
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter

def create_ansatz(num_qubits, layers=2):
    qc = QuantumCircuit(num_qubits)
    for l in range(layers):
        for q in range(num_qubits):
            qc.rx(Parameter(f"a{{l}}_{{q}}"), q)
            qc.rz(Parameter(f"b{{l}}_{{q}}"), q)
        for q in range(num_qubits - 1):
            qc.rzz(Parameter(f"c{{l}}_{{q}}"), q, q + 1)
    return qc

circuit = create_ansatz({n})
```""",
]

BASELINE_CHILD = r"""
import json, sys
rec = json.loads(sys.stdin.read())
from evaluation.extract import extract_code
from evaluation.verify import find_circuit, verify_circuit
from evaluation.barren import detect_barren_plateau
from evaluation.hamiltonians import sparse_matrix
ns = {"__name__": "__main__"}
exec(extract_code(rec["reply"]), ns)
qc, _ = find_circuit(ns, rec["num_qubits"])
v, flat = verify_circuit(qc, rec["num_qubits"], rec["constraint"])
print(detect_barren_plateau(flat, sparse_matrix(rec["hamiltonian"], rec["num_qubits"])).bp_variance)
"""


def make_records(num: int) -> list[dict]:
    return [{"id": p.id, "hamiltonian": p.hamiltonian, "num_qubits": p.num_qubits, "constraint": p.constraint,
             "prompt": p.prompt, "reply": STYLES[i % len(STYLES)].format(n=p.num_qubits), "model": "bench"}
            for i, p in enumerate(build_prompts(num))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--baseline-sample", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=1, help="alternating timings of the two BP rules")
    args = ap.parse_args()
    records = make_records(args.num)
    times: dict[str, list[float]] = {"absolute": [], "scaling": []}
    for _ in range(args.rounds):
        for rule in ("absolute", "scaling"):
            t0 = time.perf_counter()
            results = score_replies(records, workers=args.workers, bp_rule=rule)
            times[rule].append(time.perf_counter() - t0)
    ours = min(times["scaling"])
    ok = sum(r["verification_pass"] for r in results)
    bp = sum(r["bp_free"] is True for r in results)
    bases = {b: sum(r.get("bp_basis") == b for r in results) for b in ("flat", "scaling", "ratio", "undecided")}
    t0 = time.perf_counter()
    for rec in records[: args.baseline_sample]:
        subprocess.run([sys.executable, "-c", BASELINE_CHILD], input=json.dumps(rec), text=True, check=True,
                       capture_output=True)
    base = (time.perf_counter() - t0) * args.num / args.baseline_sample
    print(f"{args.num} valid replies at 4/6/8 qubits, {args.workers} workers: verified {ok}, BP-free {bp} "
          f"(rule scaling; decided by {bases})")
    print(f"  evaluation.score_replies (fork server + sandbox + verify + BP): {ours:6.2f} s wall  (goal <= 15 s)")
    for rule, ts in times.items():
        print(f"    --bp-rule {rule:<8}: " + ", ".join(f"{t:.2f} s" for t in ts))
    print(f"  fresh interpreter per reply, no sandbox (extrapolated from {args.baseline_sample}): {base:6.2f} s")
    print(f"  ratio: {base / ours:.1f}x")
    if ok != args.num:
        bad = [r for r in results if not r["verification_pass"]][:3]
        print("  unexpected failures:", [(r["id"], r["error"]) for r in bad])


if __name__ == "__main__":
    main()
