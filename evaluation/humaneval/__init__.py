"""Qiskit HumanEval through an OpenAI-compatible endpoint, judged in the evaluation sandbox (docs/humaneval.md)."""
