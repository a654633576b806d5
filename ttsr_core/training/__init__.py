"""Teaching the model: training pairs, degradations, losses, the training loop, evaluation and album adaptation."""
