"""Run model-written code in isolation: the one runner behind every judge (threat model: docs/sandbox.md).

Process roles, one module each:

  parent (CLI / library; may hold API keys)                                  client.py     run_jobs, Session
    └─ fork server `python -m evaluation.sandbox` (allow-listed env)         server.py     [trusted]
         └─ I, supervisor and judge, one per reply                           supervisor.py [trusted]
              └─ G, the reply process (PID 1 of its own PID namespace)       reply.py      [hostile]

What a judge kind provides and may import: kinds.py. Limits, environment, what a reply may read: policy.py.
The pipes between the processes: channel.py. Preloaded Qiskit stack: preload.py. Kernel mechanisms: linux/
(namespaces, landlock, seccomp, cgroups, creds).
"""

from evaluation.sandbox.client import SandboxError, Session, run_jobs
from evaluation.sandbox.kinds import JOB_KINDS, job_kind, short_exc
from evaluation.sandbox.policy import (ENV_ALLOWED, HIDDEN_DIRS, SANDBOX_UID_BASE, Isolation, MiB, SandboxLimits,
                                       readable_paths, scrubbed_env)
from evaluation.sandbox.server import probe_isolation

__all__ = ["ENV_ALLOWED", "HIDDEN_DIRS", "JOB_KINDS", "SANDBOX_UID_BASE", "Isolation", "MiB", "SandboxError",
           "SandboxLimits", "Session", "job_kind", "probe_isolation", "readable_paths", "run_jobs", "scrubbed_env",
           "short_exc"]
