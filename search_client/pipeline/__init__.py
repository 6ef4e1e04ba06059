"""The latency-aware search pipeline: pretrain -> search -> derive -> finetune -> eval -> export -> measure."""
