"""Translate this machine's pip configuration into uv's terms (uv reads no pip.conf, no PIP_* variables).

Reads `python -m pip config list` (config files of every level and PIP_* variables, as pip itself sees
them) and prints one line per setting, tab-separated:

    arg<TAB><uv command-line argument>      e.g. arg	--find-links  then  arg	/opt/wheels
    env<TAB>NAME=value                      e.g. env	SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
    note<TAB>text                           a pip setting with no uv equivalent (ignored by uv)

Precedence follows pip: a PIP_* variable (`:env:.` in `pip config list`) over the [install] section over
[global]; within a section pip config list already gives the winning file's value.
Usage: python scripts/pip_uv_args.py [PYTHON]   (PYTHON: the interpreter whose pip to ask; default this one)
"""
from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass

# pip option -> uv option, for list-valued options (whitespace-separated in pip's config).
LIST_ARGS: dict[str, str] = {
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
    "trusted-host": "--allow-insecure-host",
}
SCALAR_ARGS: dict[str, str] = {"index-url": "--index-url"}
FLAG_ARGS: dict[str, str] = {"no-index": "--no-index"}
ENV_VARS: dict[str, str] = {"cert": "SSL_CERT_FILE", "timeout": "UV_HTTP_TIMEOUT", "default-timeout": "UV_HTTP_TIMEOUT"}
# Settings that change nothing uv is asked to do here.
IGNORED: frozenset[str] = frozenset({"disable-pip-version-check", "progress-bar", "quiet", "verbose", "no-cache-dir",
                                     "cache-dir", "config-file", "no-warn-script-location", "root-user-action", "retries"})
SECTION_ORDER: tuple[str, ...] = (":env:", "install", "global")  # first wins


@dataclass(frozen=True)
class UvSettings:
    args: list[str]
    env: dict[str, str]
    notes: list[str]


def read_pip_config(python: str) -> dict[str, str]:
    """`pip config list` as {'section.option': value}."""
    out = subprocess.run([python, "-m", "pip", "config", "list"], check=True, capture_output=True, text=True).stdout
    items: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, raw = line.partition("=")
        if not sep:
            continue
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        items[key.strip()] = str(value)
    return items


def effective(items: dict[str, str]) -> dict[str, str]:
    """{option: value} after pip's precedence (PIP_* over [install] over [global])."""
    chosen: dict[str, str] = {}
    for section in reversed(SECTION_ORDER):
        prefix = section + "."
        for key, value in items.items():
            if key.startswith(prefix):
                chosen[key[len(prefix):]] = value
    return chosen


def is_true(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def translate(options: dict[str, str]) -> UvSettings:
    args: list[str] = []
    env: dict[str, str] = {}
    notes: list[str] = []
    for name, value in sorted(options.items()):
        if name in SCALAR_ARGS:
            args += [SCALAR_ARGS[name], value.strip()]
        elif name in LIST_ARGS:
            for item in value.split():
                args += [LIST_ARGS[name], item]
        elif name in FLAG_ARGS:
            if is_true(value):
                args.append(FLAG_ARGS[name])
        elif name in ENV_VARS:
            env[ENV_VARS[name]] = value.strip()
        elif name == "pre":
            if is_true(value):
                args += ["--prerelease", "allow"]
        elif name not in IGNORED:
            notes.append(f"pip setting {name}={value!r} has no uv translation here; uv ignores it")
    # pip weighs every index and find-links location together and takes the best version; uv's
    # default stops at the first index that knows a package. Keep pip's choice.
    args += ["--index-strategy", "unsafe-best-match"]
    return UvSettings(args=args, env=env, notes=notes)


def main(argv: list[str]) -> int:
    python = argv[1] if len(argv) > 1 else sys.executable
    try:
        settings = translate(effective(read_pip_config(python)))
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"pip_uv_args: cannot read pip's configuration with {python}: {exc}", file=sys.stderr)
        return 1
    lines = [f"arg\t{a}" for a in settings.args]
    lines += [f"env\t{k}={v}" for k, v in settings.env.items()]
    lines += [f"note\t{n}" for n in settings.notes]
    for line in lines:
        if "\n" in line:
            print("pip_uv_args: a pip setting holds a newline; refusing to translate it", file=sys.stderr)
            return 1
    sys.stdout.write("".join(line + "\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
