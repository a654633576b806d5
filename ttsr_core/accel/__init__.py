"""CPU speed-ups under the model: oneDNN products, fused convolutions, upsampling, the retained heap, cost counts."""
