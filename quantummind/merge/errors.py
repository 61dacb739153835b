class MergeError(Exception):
    """Bad input for a merge: the CLI prints it as one line and exits non-zero."""
