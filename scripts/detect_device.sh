#!/usr/bin/env bash
# Prints the host type the project installs and serves for: cpu or cuda.
# QM_DEVICE=cpu|cuda overrides; otherwise cuda when nvidia-smi lists a GPU. Exit 2 on a bad QM_DEVICE.
case "${QM_DEVICE:-}" in
  cpu|cuda) echo "$QM_DEVICE" ;;
  "") if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
        echo cuda
      else
        echo cpu
      fi ;;
  *) exit 2 ;;
esac
