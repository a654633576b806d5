"""Finding references and copies: recall, re-ranking, verification, copy detection and restoration, indexing."""
