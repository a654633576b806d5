"""Photo embeddings: the Embedder protocol, open_clip, the download-free fallback, the registry, the FAISS index."""
