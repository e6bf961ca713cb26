"""The anonymization stage (PyTorch): find people, replace them, write datasets with sensitivity masks."""
