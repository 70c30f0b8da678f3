"""tinyprec.training: stage 1, mixed-precision training."""
