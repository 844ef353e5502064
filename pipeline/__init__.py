"""Arabic news topic classification: prepare data, fine-tune, track in MLflow, classify dumps."""

__version__ = "0.1.0"
