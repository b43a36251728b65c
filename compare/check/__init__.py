"""Checking a user's own PyTorch GAN against its Keras port."""
