"""HumanEval assembly (evaluation.humaneval.assemble) vs `evalplus.sanitize` on the completion shapes models
return: each program is built both ways and run unsandboxed (a subprocess in a temp dir, with the task's test);
prints pass/FAIL per shape (docs/humaneval.md, "Assembly compared with evalplus").

evalplus is not a dependency: give a Python that has it (`python -m venv /tmp/ep && /tmp/ep/bin/pip install
evalplus`), e.g.  .venv/bin/python scripts/compare_evalplus_sanitize.py /tmp/ep/bin/python
For a completions-API body evalplus sanitizes prompt + completion; for a chat answer, the answer alone.
"""
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from evaluation.humaneval.tasks import tasks_by_id
from evaluation.humaneval.assemble import build_program
N, H = tasks_by_id("normal"), tasks_by_id("hard")

def body(t): return N[t].canonical_solution.strip("\n")
def first_lost(t):
    l = body(t).split("\n"); return "\n".join([l[0].lstrip()] + l[1:])
def whole(t): return H[t].canonical_solution
T0, T5, T82, T65 = "qiskitHumanEval/0", "qiskitHumanEval/5", "qiskitHumanEval/82", "qiskitHumanEval/65"
SHAPES = [
  ("indented body (completions API)", T5, body(T5)),
  ("body + rambling main/print", T5, "\n" + body(T5) + "\n\n\ndef main():\n    pass\n\nprint(create_state_prep())\n"),
  ("body, first line unindented", T5, first_lost(T5)),
  ("body, no indentation", T5, textwrap.dedent(body(T5))),
  ("body, no indentation, nested with-block", T82, textwrap.dedent(body(T82))),
  ("body, no indentation, inner defs", T65, textwrap.dedent(body(T65))),
  ("whole function + example usage", T5, whole(T5) + "\n\n# Example usage\nqc = create_state_prep()\nprint(qc)\n"),
  ("whole function + __main__ block", T5, whole(T5) + "\nif __name__ == '__main__':\n    raise SystemExit(3)\n"),
  ("function without imports", T5, "def create_state_prep():\n" + body(T5) + "\n"),
  ("chat: prose + bash fence + python fence", T5, "Sure!\n```bash\npip install qiskit\n```\nThen:\n```python\n" + whole(T5) + "```\nDone."),
  ("chat: fenced body", T0, "```python\n" + body(T0) + "\n```"),
  ("chat: unfenced function in prose", T5, "Here is the function:\n\n" + whole(T5) + "\nIt returns the circuit."),
  ("whole function with a module-level helper constant", T5, "SHOTS = 1\n" + whole(T5)),
]
EVP = r'''
import sys, json
from evalplus.sanitize import sanitize
d = json.load(sys.stdin)
print(json.dumps(sanitize(d["code"], d["entry"])))
'''
if len(sys.argv) != 2:
    sys.exit("usage: compare_evalplus_sanitize.py PYTHON_WITH_EVALPLUS")
EVALPLUS_PYTHON = sys.argv[1]


def run(code):
    with tempfile.TemporaryDirectory() as d:
        p = subprocess.run([sys.executable, "-c", code], cwd=d, capture_output=True, text=True, timeout=120)
        return p.returncode == 0, (p.stderr.strip().splitlines() or [""])[-1][:90]
for name, tid, comp in SHAPES:
    t = N[tid]
    ours = build_program(comp, t, "normal")
    # evalplus: a completions-API body is prompt + completion; a chat answer is sanitized alone
    is_body = ours.shape == "body" and not ours.from_fence
    src = (t.prompt + "\n" + comp) if is_body else comp
    san = json.loads(subprocess.run([EVALPLUS_PYTHON, "-c", EVP], input=json.dumps({"code": src, "entry": t.entry_point}),
                                    capture_output=True, text=True, timeout=60).stdout)
    evp_prog = san + "\n\n" + t.test + f"\ncheck({t.entry_point})\n"
    a, b = run(ours.code), run(evp_prog)
    print(f"{name:48s} ours={'pass' if a[0] else 'FAIL'} evalplus={'pass' if b[0] else 'FAIL'}  {'' if a[0] else a[1]} | {'' if b[0] else b[1]}")
