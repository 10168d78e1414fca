"""gpc: compose pretrained diffusion and flow-matching policies at test time."""
