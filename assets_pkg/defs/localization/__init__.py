"""Dagster assets of the localization room: the VQ-VAE models and the atlas built from them."""
