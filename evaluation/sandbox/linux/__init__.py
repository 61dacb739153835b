"""Linux kernel mechanisms the sandbox uses, one module each, through libc (ctypes).

Every function raises OSError on failure so the caller can fall back (probe) or fail closed (per reply).
"""
