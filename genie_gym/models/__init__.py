"""The Genie world model: ST-transformer, VQ, video tokenizer, latent action model, MaskGIT dynamics."""
