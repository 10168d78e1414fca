"""Diffusion Policy (Chi et al., real-stanford) workspace checkpoints as gpc parents: the `.ckpt` read without
running its pickle (checkpoint), and the low-dim U-Net policy it holds (modeling)."""
