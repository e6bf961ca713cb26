"""jaxpriv: anonymize people in images and videos, then train with DP-SGD or MaskDP."""

__version__ = "0.1.0"
