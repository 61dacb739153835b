"""The sandbox hides /tmp from replies, yet must work when Python or the project lives there
(a CI checkout or a venv under /tmp): those paths come back read-only."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from eval_replies_cases import fence, record
from evaluation.scoring import score_replies


def test_modules_under_tmp_stay_importable_and_read_only(monkeypatch):
    pkg = Path(tempfile.mkdtemp(prefix="qm-site-", dir="/tmp"))
    try:
        (pkg / "qm_probe_mod.py").write_text("NUM_QUBITS = 4\n")
        monkeypatch.setenv("PYTHONPATH", str(pkg))
        uses = """from qiskit import QuantumCircuit
from qiskit.circuit import ParameterVector
import qm_probe_mod
n = qm_probe_mod.NUM_QUBITS
t = ParameterVector("t", n)
qc = QuantumCircuit(n)
for i in range(n):
    qc.ry(t[i], i)
for i in range(n - 1):
    qc.cx(i, i + 1)
"""
        writes = uses + f"open({str(pkg / 'planted.txt')!r}, 'w').write('x')\n"
        secret = pkg.parent / f"{pkg.name}-secret"  # a host file beside it, in /tmp
        secret.write_text("token")
        peeks = uses + f"import os\nassert not os.path.exists({str(secret)!r})\n"
        results = {r["id"]: r for r in score_replies([
            record("uses", fence(uses), n=4),
            record("writes", fence(writes), n=4),
            record("peeks", fence(peeks), n=4),
        ])}
        assert results["uses"]["verification_pass"] is True, results["uses"]["error"]
        assert results["writes"]["verification_pass"] is False
        assert not (pkg / "planted.txt").exists(), "the re-exposed directory must stay read-only"
        # only the needed path is visible under /tmp: nothing else of the host's /tmp
        assert results["peeks"]["verification_pass"] is True, results["peeks"]["error"]
    finally:
        shutil.rmtree(pkg, ignore_errors=True)
        Path(f"{pkg}-secret").unlink(missing_ok=True)
