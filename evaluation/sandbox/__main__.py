"""`python -m evaluation.sandbox CFG-JSON`: the fork server (evaluation.sandbox.server)."""

from evaluation.sandbox.server import main

if __name__ == "__main__":
    main()
