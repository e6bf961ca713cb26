"""Comparison of jaxpriv with PyTorch and Opacus."""
