"""Tests of pipeline/matching: verification, retrieval, copies and restoration, on seeded scenes."""
