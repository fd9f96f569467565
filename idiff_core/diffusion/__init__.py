"""Diffusion process of IDiff-Face: the DDPM schedule, its training loss and the samplers."""
