"""Which photos match: geometric verification, reference retrieval and re-ranking, copies and their restoration."""
