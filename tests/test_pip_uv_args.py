"""scripts/pip_uv_args.py: pip's settings (config files, PIP_* variables) handed to uv, which reads neither."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

from quantummind.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "pip_uv_args.py"
_spec = importlib.util.spec_from_file_location("pip_uv_args", SCRIPT)
pip_uv_args = importlib.util.module_from_spec(_spec)
sys.modules["pip_uv_args"] = pip_uv_args
_spec.loader.exec_module(pip_uv_args)


def run_script(env_vars: dict[str, str], config_file: str = os.devnull) -> tuple[list[str], dict[str, str], list[str]]:
    """Run the script against the real pip with only the given PIP_* variables and one config file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(env_vars, PIP_CONFIG_FILE=config_file)
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    args: list[str] = []
    envs: dict[str, str] = {}
    notes: list[str] = []
    for line in proc.stdout.splitlines():
        kind, value = line.split("\t", 1)
        if kind == "arg":
            args.append(value)
        elif kind == "env":
            name, _, val = value.partition("=")
            envs[name] = val
        else:
            assert kind == "note", line
            notes.append(value)
    return args, envs, notes


def pairs(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_pip_variables_become_uv_arguments_and_environment(tmp_path):
    args, envs, notes = run_script({
        "PIP_INDEX_URL": "https://mirror.example/simple",
        "PIP_EXTRA_INDEX_URL": "file:///opt/a/simple file:///opt/b/simple",
        "PIP_FIND_LINKS": "/opt/wheels",
        "PIP_CONSTRAINT": str(tmp_path / "c.txt"),
        "PIP_TRUSTED_HOST": "mirror.example",
        "PIP_CERT": "/etc/ssl/certs/ca.pem",
        "PIP_DEFAULT_TIMEOUT": "180",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    })
    assert pairs(args, "--index-url") == ["https://mirror.example/simple"]
    assert pairs(args, "--extra-index-url") == ["file:///opt/a/simple", "file:///opt/b/simple"]
    assert pairs(args, "--find-links") == ["/opt/wheels"]
    assert pairs(args, "--constraint") == [str(tmp_path / "c.txt")]
    assert pairs(args, "--allow-insecure-host") == ["mirror.example"]
    assert pairs(args, "--index-strategy") == ["unsafe-best-match"]  # pip's best version across indexes
    assert envs == {"SSL_CERT_FILE": "/etc/ssl/certs/ca.pem", "UV_HTTP_TIMEOUT": "180"}
    assert notes == []


def test_config_file_sections_and_variables_follow_pips_precedence(tmp_path):
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nfind-links = /global/wheels\nindex-url = https://global.example/simple\n"
                    "no-index = true\nsrc = /somewhere\n[install]\nfind-links = /install/wheels\n")
    args, _, notes = run_script({}, str(conf))
    assert pairs(args, "--find-links") == ["/install/wheels"]  # [install] over [global]
    assert pairs(args, "--index-url") == ["https://global.example/simple"]
    assert "--no-index" in args
    assert notes == ["pip setting src='/somewhere' has no uv translation here; uv ignores it"]
    args, _, _ = run_script({"PIP_FIND_LINKS": "/env/wheels"}, str(conf))
    assert pairs(args, "--find-links") == ["/env/wheels"]  # a PIP_* variable over every file


def test_nothing_configured_is_pips_defaults():
    args, envs, notes = run_script({})
    assert args == ["--index-strategy", "unsafe-best-match"] and envs == {} and notes == []


def test_effective_takes_env_then_install_then_global():
    items = {"global.find-links": "/g", "install.find-links": "/i", ":env:.find-links": "/e", "global.cert": "/c"}
    assert pip_uv_args.effective(items) == {"find-links": "/e", "cert": "/c"}
