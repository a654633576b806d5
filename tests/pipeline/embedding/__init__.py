"""Tests of pipeline/embedding: embedders and the FAISS index."""
