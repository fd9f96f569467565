"""The trainers (autoencoder, LDM, face recognition) and what they share: EMA, checkpoints, resume."""
