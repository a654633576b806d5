"""The paper's texture transformer as a model: extractor, search, network, checkpoints and tensor-level inference."""
