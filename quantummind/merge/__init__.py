"""Streaming, QLoRA-faithful merge of a LoRA adapter into its base model (issue 6).

Importing this package pulls in torch and nothing heavier: transformers/peft are imported
only by `verify` (the optional --verify check).
"""

from quantummind.merge.checkpoints import CheckpointChoice, CheckpointScore, select_checkpoint
from quantummind.merge.errors import MergeError
from quantummind.merge.merge import MergeResult, merge

__all__ = ["CheckpointChoice", "CheckpointScore", "MergeError", "MergeResult", "merge", "select_checkpoint"]
