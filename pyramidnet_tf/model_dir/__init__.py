"""The model-directory contract: weights and model_config.json on disk,
metadata, exclusive use."""
