"""`accelerate launch -m quantummind.training.cpu_qlora_launch CONFIG ...`: axolotl.cli.train
with the bitsandbytes CPU QLoRA workaround applied first.

On CPUs with AVX512-BF16, bitsandbytes 0.50.2 repacks 4-bit weights into an inference layout at
the first evaluation, and the next training step dies with "a view of a leaf Variable that
requires grad is being used in an in-place operation". Reporting no AVX512-BF16 keeps the
training layout. Everything else is axolotl.cli.train unchanged (same arguments).
"""

from __future__ import annotations


def apply_workaround() -> None:
    import bitsandbytes.nn.modules as bnb_modules

    bnb_modules.has_avx512bf16 = lambda: False


def main() -> None:
    apply_workaround()
    import fire
    from axolotl.cli.train import do_cli

    fire.Fire(do_cli)


if __name__ == "__main__":
    main()
